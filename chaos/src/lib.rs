//! Chaos runs for mesh (issue 8): real `mesh` processes, each in its own network namespace,
//! joined by veth links in two domains; a producer and a consumer application at the two ends;
//! a seeded schedule of faults injected while the traffic flows (link cut, random loss, domain
//! partition, SIGKILL of the origin, a transit node and the destination, a slow peer behind a
//! delay proxy, clock skew); and a checker that every message the origin answered PERSISTED
//! reached the destination's application exactly once.
//!
//! The parts that decide things are pure and unit-tested: [`topology`] (who links to whom, the
//! addresses), [`schedule`] (the faults a seed draws), [`check`] (the verdict from what the
//! producer and the consumer recorded). The shells do the I/O: [`netns`] (namespaces, veth,
//! nftables), [`node`] (the `mesh` processes), [`proxy`] (the delay proxy), [`traffic`] (the
//! applications) and [`run`] (the orchestration and its clean-up). `docs/chaos.md` gives the
//! design and the figures.

pub mod check;
pub mod netns;
pub mod node;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod topology;
pub mod traffic;

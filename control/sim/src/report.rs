//! From a run's raw output to the figures, the checks, a text summary and JSON.

use std::fmt::Write as _;

use crate::engine::{Micros, Traffic};
use crate::figures::{Dist, DomainFigures, Phase, RunOutput};
use crate::scenario::{MAX_SIM_US, Mode, SimConfig, expected_entries};
use crate::topology::{Topology, u32_of};

/// The route-computation target for a 1,000-node domain (the "SPF under 5 ms").
pub const SPF_TARGET_NS: u64 = 5_000_000;

/// The shape of the generated mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TopologySummary {
    /// Nodes.
    pub nodes: u64,
    /// Domains.
    pub domains: u32,
    /// Smallest domain.
    pub size_min: u32,
    /// Largest domain.
    pub size_max: u32,
    /// Intra-domain links.
    pub intra_links: u64,
    /// Inter-domain links.
    pub inter_links: u64,
    /// Mean node degree inside domains.
    pub avg_degree: f64,
    /// Border nodes.
    pub borders: u64,
    /// Longest shortest path of the domain graph, in domains crossed.
    pub domain_diameter: u32,
}

impl TopologySummary {
    /// Summarises `topo`.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn of(topo: &Topology) -> TopologySummary {
        let nodes = topo.node_count();
        let intra = topo.intra_link_count();
        TopologySummary {
            nodes,
            domains: u32_of(topo.domains.len()),
            size_min: topo.domains.iter().map(|d| d.size).min().unwrap_or(0),
            size_max: topo.domains.iter().map(|d| d.size).max().unwrap_or(0),
            intra_links: intra,
            inter_links: topo.inter.len() as u64,
            avg_degree: 2.0 * intra as f64 / nodes.max(1) as f64,
            borders: (0..u32_of(topo.domains.len()))
                .map(|d| topo.borders(d).len() as u64)
                .sum(),
            domain_diameter: topo.domain_diameter(|_| false).unwrap_or(u32::MAX),
        }
    }
}

/// One kind of phase over the domains that ran it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseStats {
    /// Domains that ran it.
    pub domains: u32,
    /// LSA transmissions on the domain's own links, per domain.
    pub lsas: Dist,
    /// LSA transmissions per node of the domain: mean over domains.
    pub lsas_per_node_mean: f64,
    /// LSA transmissions per node of the domain: largest.
    pub lsas_per_node_max: f64,
    /// Messages on the domain's own links, per domain.
    pub messages: Dist,
    /// Bytes on the domain's own links, per domain.
    pub bytes: Dist,
    /// Own LSAs originated in the domain, per domain.
    pub originated: Dist,
    /// Route computations per node: mean over domains.
    pub spf_per_node: f64,
    /// Simulated time to converge, per domain.
    pub converge_us: Dist,
    /// Transmissions outside the domain, summed over domains.
    pub foreign: Traffic,
    /// Domains whose LSA transmissions exceeded `originated × 2 × links` (each LSA instance
    /// crosses each link at most once each way).
    pub over_bound: u32,
    /// Transmissions on the domains' own links, summed.
    pub total: Traffic,
}

impl PhaseStats {
    #[allow(clippy::cast_precision_loss)]
    fn of<'a>(phases: impl Iterator<Item = (&'a DomainFigures, Phase)>) -> PhaseStats {
        let mut s = PhaseStats::default();
        let (mut lsas, mut messages, mut bytes, mut orig, mut conv) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut per_node_sum, mut spf_sum) = (0.0, 0.0);
        for (f, p) in phases {
            s.domains += 1;
            lsas.push(p.traffic.lsas());
            messages.push(p.traffic.messages);
            bytes.push(p.traffic.bytes);
            orig.push(p.originated);
            conv.push(p.converge_us);
            let per_node = p.traffic.lsas() as f64 / f64::from(f.size);
            per_node_sum += per_node;
            s.lsas_per_node_max = s.lsas_per_node_max.max(per_node);
            spf_sum += p.spf_runs as f64 / f64::from(f.size);
            s.foreign.add(&p.foreign);
            s.total.add(&p.traffic);
            if p.traffic.lsas() > p.originated * 2 * u64::from(f.links) {
                s.over_bound += 1;
            }
        }
        if s.domains > 0 {
            s.lsas_per_node_mean = per_node_sum / f64::from(s.domains);
            s.spf_per_node = spf_sum / f64::from(s.domains);
        }
        s.lsas = Dist::of(&mut lsas);
        s.messages = Dist::of(&mut messages);
        s.bytes = Dist::of(&mut bytes);
        s.originated = Dist::of(&mut orig);
        s.converge_us = Dist::of(&mut conv);
        s
    }
}

/// A pass/fail check of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// The figures derived from a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Route-table entries per node.
    pub entries: Dist,
    /// Nodes whose entries at convergence were not `(own domain size − 1) + (domains − 1)`.
    pub entries_unexpected: u64,
    /// [`mesh_routing::Router::heap_bytes`] per node.
    pub router_heap: Dist,
    /// Route table heap bytes per node.
    pub table_heap: Dist,
    /// Encoded bytes of the LSAs a node holds.
    pub lsa_bytes: Dist,
    /// Router + table + LSAs + SPF workspace per node: what a real node would hold.
    pub state_bytes: Dist,
    /// Route computation per node, as timed in the run.
    pub spf_ns: Dist,
    /// The same for nodes of domains within 10 % of the nominal size.
    pub spf_nominal_ns: Dist,
    /// Route computation re-timed, best of three (every 100th node).
    pub spf_best_ns: Dist,
    /// The same for nodes of domains within 10 % of the nominal size.
    pub spf_best_nominal_ns: Dist,
    /// Cold boot, per sampled domain.
    pub boot: PhaseStats,
    /// Join, per sampled domain (intra-domain side).
    pub join: PhaseStats,
    /// Warm start, per domain (hierarchical mode).
    pub warm: PhaseStats,
    /// Intra-domain link failure, per sampled domain.
    pub link_failure: PhaseStats,
    /// Node failure, per sampled domain.
    pub node_failure: PhaseStats,
    /// Inter-domain link failure, per domain simulated in full through it.
    pub inter_failure: PhaseStats,
}

/// A run with its figures and checks.
#[derive(Clone, Debug)]
pub struct Report {
    /// The settings.
    pub cfg: SimConfig,
    /// The mesh.
    pub topo: TopologySummary,
    /// Raw output.
    pub out: RunOutput,
    /// Derived figures.
    pub figures: Figures,
    /// Checks.
    pub checks: Vec<Check>,
    /// Wall-clock seconds spent generating the topology.
    pub wall_generate_s: f64,
    /// Wall-clock seconds spent simulating.
    pub wall_run_s: f64,
}

fn dist_u32(values: impl Iterator<Item = u32>) -> Dist {
    let mut v: Vec<u64> = values.map(u64::from).collect();
    Dist::of(&mut v)
}

fn near_nominal(size: u32, nominal: u32) -> bool {
    u64::from(size) * 10 >= u64::from(nominal) * 9
        && u64::from(size) * 10 <= u64::from(nominal) * 11
}

impl Report {
    /// Derives figures and checks.
    #[must_use]
    pub fn new(
        cfg: &SimConfig,
        topo: &Topology,
        out: RunOutput,
        wall_generate_s: f64,
        wall_run_s: f64,
    ) -> Report {
        let dn = u32_of(topo.domains.len());
        let mut fig = Figures::default();
        // Per node, in (domain, node) order.
        let sizes: Vec<u32> = topo
            .domains
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.size, d.size as usize))
            .collect();
        fig.entries = dist_u32(out.nodes.iter().map(|n| n.entries));
        fig.entries_unexpected = out
            .nodes
            .iter()
            .zip(&sizes)
            .filter(|(n, s)| n.entries != expected_entries(**s, dn))
            .count() as u64;
        fig.router_heap = dist_u32(out.nodes.iter().map(|n| n.router_heap));
        fig.table_heap = dist_u32(out.nodes.iter().map(|n| n.table_heap));
        fig.lsa_bytes = dist_u32(out.nodes.iter().map(|n| n.lsa_bytes));
        let ws = out.spf_workspace_bytes;
        let mut state: Vec<u64> = out
            .nodes
            .iter()
            .map(|n| {
                u64::from(n.router_heap) + u64::from(n.table_heap) + u64::from(n.lsa_bytes) + ws
            })
            .collect();
        fig.state_bytes = Dist::of(&mut state);
        let nominal = cfg.topology.nodes_per_domain;
        let pick = |best: bool, only_nominal: bool| {
            let mut v: Vec<u64> = out
                .nodes
                .iter()
                .zip(&sizes)
                .filter(|(_, s)| !only_nominal || near_nominal(**s, nominal))
                .map(|(n, _)| if best { n.spf_best_ns } else { n.spf_ns })
                .filter(|x| *x > 0)
                .collect();
            Dist::of(&mut v)
        };
        fig.spf_ns = pick(false, false);
        fig.spf_nominal_ns = pick(false, true);
        fig.spf_best_ns = pick(true, false);
        fig.spf_best_nominal_ns = pick(true, true);
        let doms = &out.domains;
        fig.boot = PhaseStats::of(doms.iter().filter_map(|f| f.boot.map(|p| (f, p))));
        fig.join = PhaseStats::of(doms.iter().filter_map(|f| f.join.map(|p| (f, p))));
        fig.warm = PhaseStats::of(doms.iter().filter_map(|f| f.warm.map(|p| (f, p))));
        fig.link_failure = PhaseStats::of(
            doms.iter()
                .filter_map(|f| f.link_failure.map(|x| (f, x.phase))),
        );
        fig.node_failure = PhaseStats::of(
            doms.iter()
                .filter_map(|f| f.node_failure.map(|x| (f, x.phase))),
        );
        fig.inter_failure =
            PhaseStats::of(doms.iter().filter_map(|f| f.inter_failure.map(|p| (f, p))));

        let checks = checks(&out, &fig, topo);
        Report {
            cfg: cfg.clone(),
            topo: TopologySummary::of(topo),
            out,
            figures: fig,
            checks,
            wall_generate_s,
            wall_run_s,
        }
    }

    /// Whether every check held.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

fn checks(out: &RunOutput, fig: &Figures, topo: &Topology) -> Vec<Check> {
    let sum = |f: fn(&DomainFigures) -> u64| out.domains.iter().map(f).sum::<u64>();
    let sk = out.skeleton.unwrap_or_default();
    let mut c = Vec::new();
    let wrong = sum(|f| f.entries_wrong) + sk.routes_wrong;
    c.push(Check {
        name: "entries per node = (own domain size - 1) + (domains - 1)",
        ok: wrong == 0
            && fig.entries_unexpected == 0
            && out.nodes.len() as u64 == topo.node_count(),
        detail: format!(
            "{} nodes; {} table checks off (every node after every phase, border routers \
             of the domain level), {} nodes off at convergence",
            out.nodes.len(),
            wrong,
            fig.entries_unexpected
        ),
    });
    for (name, p) in [
        (
            "intra-domain link failure stays in its domain",
            &fig.link_failure,
        ),
        ("node failure stays in its domain", &fig.node_failure),
    ] {
        c.push(Check {
            name,
            ok: p.foreign.messages == 0 && p.over_bound == 0,
            detail: format!(
                "{} domains: {} transmissions outside the domain; {} domains over \
                 originated x 2 x links LSA transmissions",
                p.domains, p.foreign.messages, p.over_bound
            ),
        });
    }
    let mism = sum(|f| f.summary_mismatches) + sum(|f| f.lsa_mismatches) + sk.script_items_dropped;
    if out.skeleton.is_some() {
        c.push(Check {
            name: "domain runs agree with the domain-level run",
            ok: mism == 0,
            detail: format!(
                "{} border summaries differ, {} node LSAs differ, {} replay items left out",
                sum(|f| f.summary_mismatches),
                sum(|f| f.lsa_mismatches),
                sk.script_items_dropped
            ),
        });
    }
    let errors = out.protocol_errors + sum(|f| f.protocol_errors);
    c.push(Check {
        name: "no protocol errors",
        ok: errors == 0,
        detail: format!("{errors} inputs refused, LSAs rejected or left unacknowledged"),
    });
    if let Some(w) = out.walks {
        c.push(Check {
            name: "packets walked through the tables arrive",
            ok: w.failed == 0 && w.tried > 0,
            detail: format!("{} of {} walks failed ({} hops)", w.failed, w.tried, w.hops),
        });
    }
    c.push(Check {
        name: "no periodic refresh counted",
        ok: out.sim_end_us < MAX_SIM_US,
        detail: format!("simulated time ends at {:.1} s", secs(out.sim_end_us)),
    });
    c
}

/// A non-negative mean, rounded to a whole number.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(x: f64) -> u64 {
    x.max(0.0).round() as u64
}

#[allow(clippy::cast_precision_loss)]
fn secs(us: Micros) -> f64 {
    us as f64 / 1e6
}

#[allow(clippy::cast_precision_loss)]
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[allow(clippy::cast_precision_loss)]
fn human(x: u64) -> String {
    let f = x as f64;
    if x >= 10_000_000_000 {
        format!("{:.1}G", f / 1e9)
    } else if x >= 10_000_000 {
        format!("{:.1}M", f / 1e6)
    } else if x >= 100_000 {
        format!("{:.0}k", f / 1e3)
    } else {
        x.to_string()
    }
}

#[allow(clippy::cast_precision_loss)]
fn bytes(x: u64) -> String {
    let f = x as f64;
    if x >= 1 << 30 {
        format!("{:.1} GiB", f / f64::from(1u32 << 30))
    } else if x >= 1 << 20 {
        format!("{:.1} MiB", f / f64::from(1u32 << 20))
    } else if x >= 1 << 10 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{x} B")
    }
}

fn phase_line(p: &PhaseStats) -> String {
    if p.domains == 0 {
        return "not run".into();
    }
    format!(
        "LSA tx per domain p50 {} (max {}), {:.1}/node (max {:.1}); {} msgs, {} p50; \
         {:.1} route computations/node; converged in {:.0} ms p50, {:.0} ms max",
        human(p.lsas.p50),
        human(p.lsas.max),
        p.lsas_per_node_mean,
        p.lsas_per_node_max,
        human(p.messages.p50),
        bytes(p.bytes.p50),
        p.spf_per_node,
        ms(p.converge_us.p50 * 1000),
        ms(p.converge_us.max * 1000),
    )
}

impl Report {
    /// The human-readable summary.
    #[must_use]
    #[allow(clippy::too_many_lines, clippy::many_single_char_names)]
    pub fn text(&self) -> String {
        let (t, f, o, c) = (&self.topo, &self.figures, &self.out, &self.cfg);
        let mut text = String::new();
        let w = &mut text;
        let _ = writeln!(
            w,
            "mesh-sim: deterministic simulation of the mesh-routing state machines (no sockets)"
        );
        let _ = writeln!(
            w,
            "  mesh       {} domains x {} nodes = {} nodes (domain sizes {}..={}), seed {}",
            t.domains, c.topology.nodes_per_domain, t.nodes, t.size_min, t.size_max, c.seed
        );
        let _ = writeln!(
            w,
            "  topology   {} intra-domain links (mean degree {:.2}), {} inter-domain links, {} \
             border nodes, domain-graph diameter {}",
            t.intra_links, t.avg_degree, t.inter_links, t.borders, t.domain_diameter
        );
        let sampled = (0..t.domains).filter(|d| c.samples(*d)).count();
        let failing = (0..t.domains).filter(|d| c.fails(*d)).count();
        match c.mode {
            Mode::Live => {
                let _ = writeln!(
                    w,
                    "  mode       live: all {} routers live in one network; {} domains lose a \
                     link and a node",
                    t.nodes, failing
                );
            }
            Mode::Hierarchical => {
                let sk = o.skeleton.unwrap_or_default();
                let _ = writeln!(
                    w,
                    "  mode       hierarchical: domain level with all {} border routers live \
                     ({} interior node LSAs, {} virtual links); then every domain in full, one \
                     at a time ({} threads): {} sampled domains boot cold and replay the join \
                     and the inter-domain link failure, {} start warm; {} domains lose a link \
                     and a node",
                    sk.routers,
                    sk.interior_lsas,
                    sk.virtual_links,
                    c.threads,
                    sampled,
                    t.domains as usize - sampled,
                    failing
                );
            }
        }
        let _ = writeln!(
            w,
            "  run        {:.1} s generating, {:.1} s simulating (wall clock); {:.1} s simulated",
            self.wall_generate_s,
            self.wall_run_s,
            secs(o.sim_end_us)
        );
        let _ = writeln!(w);
        let nominal = c.topology.nodes_per_domain;
        let _ = writeln!(
            w,
            "  {:<31}{}..={} (= own domain size - 1 + {} other domains) at all {} nodes",
            "route-table entries per node",
            f.entries.min,
            f.entries.max,
            t.domains - 1,
            o.nodes.len()
        );
        let _ = writeln!(
            w,
            "  {:<31}router {} mean (max {}), table {} mean (max {}), \
             LSAs held {} mean (max {}), SPF scratch {}; total {} mean (max {})",
            "control state per node",
            bytes(whole(f.router_heap.mean)),
            bytes(f.router_heap.max),
            bytes(whole(f.table_heap.mean)),
            bytes(f.table_heap.max),
            bytes(whole(f.lsa_bytes.mean)),
            bytes(f.lsa_bytes.max),
            bytes(o.spf_workspace_bytes),
            bytes(whole(f.state_bytes.mean)),
            bytes(f.state_bytes.max),
        );
        let _ = writeln!(
            w,
            "  {:<31}in the run: p50 {:.2} ms, p99 {:.2} ms, max {:.2} \
             ms over {} nodes; re-timed best of 3: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
             over {}",
            "route computation per node",
            ms(f.spf_ns.p50),
            ms(f.spf_ns.p99),
            ms(f.spf_ns.max),
            f.spf_ns.n,
            ms(f.spf_best_ns.p50),
            ms(f.spf_best_ns.p99),
            ms(f.spf_best_ns.max),
            f.spf_best_ns.n
        );
        let _ = writeln!(
            w,
            "  {:<31}in the run p50 {:.2} / p99 {:.2} ms, re-timed p99 \
             {:.2} ms; target < {:.0} ms: {}",
            format!(
                "  domains of {}..={} nodes",
                nominal * 9 / 10,
                nominal * 11 / 10
            ),
            ms(f.spf_nominal_ns.p50),
            ms(f.spf_nominal_ns.p99),
            ms(f.spf_best_nominal_ns.p99),
            ms(SPF_TARGET_NS),
            if f.spf_best_nominal_ns.p99 < SPF_TARGET_NS && f.spf_nominal_ns.p50 < SPF_TARGET_NS {
                "met"
            } else {
                "NOT met"
            }
        );
        let label = format!("boot (cold, {} domains)", f.boot.domains);
        let _ = writeln!(w, "  {label:<31}{}", phase_line(&f.boot));
        let _ = writeln!(
            w,
            "  {:<31}{} summary LSA tx on inter-domain links ({}), mesh \
             converged in {:.1} s",
            "join, domain level",
            human(o.join_inter.summary_lsas),
            bytes(o.join_inter.bytes),
            secs(o.join_converge_us)
        );
        let label = format!("join, inside {} domains", f.join.domains);
        let _ = writeln!(w, "  {label:<31}{}", phase_line(&f.join));
        if f.warm.domains > 0 {
            let _ = writeln!(
                w,
                "  {:<31}{:.1} route computations/node, {} msgs p50",
                format!("warm start ({} domains)", f.warm.domains),
                f.warm.spf_per_node,
                human(f.warm.messages.p50)
            );
        }
        let _ = writeln!(
            w,
            "  {:<31}{}; {} tx in other domains",
            "intra-domain link failure",
            phase_line(&f.link_failure),
            f.link_failure.foreign.messages
        );
        let _ = writeln!(
            w,
            "  {:<31}{}; {} tx in other domains",
            "node failure",
            phase_line(&f.node_failure),
            f.node_failure.foreign.messages
        );
        let i = &o.inter_failure;
        let link = match (i.a, i.b) {
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "none".into(),
        };
        let _ = writeln!(
            w,
            "  {:<31}link {}: {} summary LSA tx on inter-domain links \
             ({}); mesh converged in {:.1} s",
            "inter-domain link failure",
            link,
            human(i.inter.summary_lsas),
            bytes(i.inter.bytes),
            secs(i.converge_us)
        );
        if let Some(sk) = o.skeleton {
            let _ = writeln!(
                w,
                "  {:<31}{} of {} domains originated new summaries, {} \
                 received them",
                "  domain level", sk.failure_domains_changed, t.domains, sk.failure_domains_reached
            );
        }
        let _ = writeln!(
            w,
            "  {:<31}{}; total {} LSA tx ({}), {} of them reached",
            format!("  inside {} domains", f.inter_failure.domains),
            phase_line(&f.inter_failure),
            human(i.intra.lsas()),
            bytes(i.intra.bytes),
            i.domains_reached
        );
        let _ = writeln!(w);
        for ch in &self.checks {
            let _ = writeln!(
                w,
                "  [{}] {}: {}",
                if ch.ok { "ok" } else { "FAIL" },
                ch.name,
                ch.detail
            );
        }
        text
    }
}

/// A JSON value (the output is small and fixed in shape: no serde needed).
#[derive(Clone, Debug)]
pub enum J {
    /// An unsigned integer.
    U(u64),
    /// A float.
    F(f64),
    /// A string.
    S(String),
    /// A boolean.
    B(bool),
    /// `null`.
    Null,
    /// An array.
    A(Vec<J>),
    /// An object, keys in order.
    O(Vec<(&'static str, J)>),
}

impl J {
    /// Serialises with two-space indentation.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, d: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', 2 * d));
        };
        match self {
            J::U(x) => {
                let _ = write!(out, "{x}");
            }
            J::F(x) if x.is_finite() => {
                let _ = write!(out, "{x:.6}");
            }
            J::F(_) | J::Null => out.push_str("null"),
            J::B(b) => out.push_str(if *b { "true" } else { "false" }),
            J::S(s) => {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            J::A(items) => {
                // Arrays of numbers stay on one line.
                if items.iter().all(|x| matches!(x, J::U(_) | J::F(_))) {
                    out.push('[');
                    for (k, x) in items.iter().enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        x.write(out, depth);
                    }
                    out.push(']');
                    return;
                }
                out.push('[');
                for (k, x) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    x.write(out, depth + 1);
                }
                pad(out, depth);
                out.push(']');
            }
            J::O(fields) => {
                out.push('{');
                for (k, (key, x)) in fields.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    let _ = write!(out, "\"{key}\": ");
                    x.write(out, depth + 1);
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }
}

fn jd(d: &Dist) -> J {
    J::O(vec![
        ("n", J::U(d.n)),
        ("mean", J::F(d.mean)),
        ("min", J::U(d.min)),
        ("p50", J::U(d.p50)),
        ("p99", J::U(d.p99)),
        ("max", J::U(d.max)),
    ])
}

fn jt(t: &Traffic) -> J {
    J::O(vec![
        ("messages", J::U(t.messages)),
        ("updates", J::U(t.updates)),
        ("acks", J::U(t.acks)),
        ("db_syncs", J::U(t.db_syncs)),
        ("node_lsas", J::U(t.node_lsas)),
        ("summary_lsas", J::U(t.summary_lsas)),
        ("bytes", J::U(t.bytes)),
    ])
}

fn jp(p: &PhaseStats) -> J {
    J::O(vec![
        ("domains", J::U(u64::from(p.domains))),
        ("lsa_tx_per_domain", jd(&p.lsas)),
        ("lsa_tx_per_node_mean", J::F(p.lsas_per_node_mean)),
        ("lsa_tx_per_node_max", J::F(p.lsas_per_node_max)),
        ("messages_per_domain", jd(&p.messages)),
        ("bytes_per_domain", jd(&p.bytes)),
        ("originated_per_domain", jd(&p.originated)),
        ("route_computations_per_node", J::F(p.spf_per_node)),
        ("converge_us", jd(&p.converge_us)),
        ("tx_outside_the_domain", jt(&p.foreign)),
        ("domains_over_bound", J::U(u64::from(p.over_bound))),
        ("total", jt(&p.total)),
    ])
}

fn jphase(p: Option<&Phase>) -> J {
    p.map_or(J::Null, |p| {
        J::O(vec![
            ("lsa_tx", J::U(p.traffic.lsas())),
            ("messages", J::U(p.traffic.messages)),
            ("bytes", J::U(p.traffic.bytes)),
            ("tx_outside", J::U(p.foreign.messages)),
            ("originated", J::U(p.originated)),
            ("converge_us", J::U(p.converge_us)),
            ("route_computations", J::U(p.spf_runs)),
        ])
    })
}

impl Report {
    /// Everything as JSON: settings, topology, figures, checks, and per-domain rows.
    #[must_use]
    #[allow(clippy::many_single_char_names)]
    pub fn json(&self) -> J {
        let (t, f, o, c) = (&self.topo, &self.figures, &self.out, &self.cfg);
        let sk = o.skeleton.unwrap_or_default();
        let i = &o.inter_failure;
        let domains = o
            .domains
            .iter()
            .map(|d| {
                J::O(vec![
                    ("index", J::U(u64::from(d.index))),
                    ("size", J::U(u64::from(d.size))),
                    ("links", J::U(u64::from(d.links))),
                    ("borders", J::U(u64::from(d.borders))),
                    ("boot", jphase(d.boot.as_ref())),
                    ("join", jphase(d.join.as_ref())),
                    ("warm", jphase(d.warm.as_ref())),
                    (
                        "link_failure",
                        jphase(d.link_failure.as_ref().map(|x| &x.phase)),
                    ),
                    (
                        "node_failure",
                        jphase(d.node_failure.as_ref().map(|x| &x.phase)),
                    ),
                    ("inter_failure", jphase(d.inter_failure.as_ref())),
                ])
            })
            .collect();
        J::O(vec![
            (
                "config",
                J::O(vec![
                    ("domains", J::U(u64::from(c.topology.domains))),
                    (
                        "nodes_per_domain",
                        J::U(u64::from(c.topology.nodes_per_domain)),
                    ),
                    ("size_spread", J::F(c.topology.size_spread)),
                    ("seed", J::U(c.seed)),
                    ("mode", J::S(c.mode.name().into())),
                    (
                        "sample_domains",
                        c.sample_domains.map_or(J::Null, |k| J::U(u64::from(k))),
                    ),
                    (
                        "failure_domains",
                        c.failure_domains.map_or(J::Null, |k| J::U(u64::from(k))),
                    ),
                    ("threads", J::U(c.threads as u64)),
                    ("spf_initial_us", J::U(c.throttle.initial_us)),
                    ("spf_hold_us", J::U(c.throttle.hold_us)),
                    ("spf_max_us", J::U(c.throttle.max_us)),
                ]),
            ),
            (
                "topology",
                J::O(vec![
                    ("nodes", J::U(t.nodes)),
                    ("domains", J::U(u64::from(t.domains))),
                    ("size_min", J::U(u64::from(t.size_min))),
                    ("size_max", J::U(u64::from(t.size_max))),
                    ("intra_links", J::U(t.intra_links)),
                    ("inter_links", J::U(t.inter_links)),
                    ("mean_degree", J::F(t.avg_degree)),
                    ("border_nodes", J::U(t.borders)),
                    ("domain_diameter", J::U(u64::from(t.domain_diameter))),
                ]),
            ),
            (
                "wall_s",
                J::O(vec![
                    ("generate", J::F(self.wall_generate_s)),
                    ("simulate", J::F(self.wall_run_s)),
                ]),
            ),
            ("simulated_s", J::F(secs(o.sim_end_us))),
            (
                "per_node",
                J::O(vec![
                    ("route_table_entries", jd(&f.entries)),
                    ("router_heap_bytes", jd(&f.router_heap)),
                    ("table_heap_bytes", jd(&f.table_heap)),
                    ("lsa_bytes_held", jd(&f.lsa_bytes)),
                    ("spf_workspace_bytes", J::U(o.spf_workspace_bytes)),
                    ("control_state_bytes", jd(&f.state_bytes)),
                    ("route_computation_ns", jd(&f.spf_ns)),
                    ("route_computation_ns_nominal_size", jd(&f.spf_nominal_ns)),
                    ("route_computation_best_of_3_ns", jd(&f.spf_best_ns)),
                    (
                        "route_computation_best_of_3_ns_nominal_size",
                        jd(&f.spf_best_nominal_ns),
                    ),
                ]),
            ),
            ("boot", jp(&f.boot)),
            (
                "join",
                J::O(vec![
                    ("inter_domain_links", jt(&o.join_inter)),
                    ("converge_us", J::U(o.join_converge_us)),
                    ("inside_sampled_domains", jp(&f.join)),
                ]),
            ),
            ("warm_start", jp(&f.warm)),
            ("intra_link_failure", jp(&f.link_failure)),
            ("node_failure", jp(&f.node_failure)),
            (
                "inter_link_failure",
                J::O(vec![
                    ("a", i.a.map_or(J::Null, |x| J::U(x.get()))),
                    ("b", i.b.map_or(J::Null, |x| J::U(x.get()))),
                    ("inter_domain_links", jt(&i.inter)),
                    ("converge_us", J::U(i.converge_us)),
                    (
                        "domains_originating_summaries",
                        J::U(u64::from(sk.failure_domains_changed)),
                    ),
                    (
                        "domains_receiving_summaries",
                        J::U(u64::from(sk.failure_domains_reached)),
                    ),
                    (
                        "domains_measured_in_full",
                        J::U(u64::from(i.domains_measured)),
                    ),
                    (
                        "domains_with_transmissions",
                        J::U(u64::from(i.domains_reached)),
                    ),
                    ("intra_domain_total", jt(&i.intra)),
                    ("per_domain", jp(&f.inter_failure)),
                ]),
            ),
            (
                "walks",
                o.walks.map_or(J::Null, |w| {
                    J::O(vec![
                        ("tried", J::U(w.tried)),
                        ("failed", J::U(w.failed)),
                        ("hops", J::U(w.hops)),
                    ])
                }),
            ),
            (
                "checks",
                J::A(
                    self.checks
                        .iter()
                        .map(|ch| {
                            J::O(vec![
                                ("name", J::S(ch.name.into())),
                                ("ok", J::B(ch.ok)),
                                ("detail", J::S(ch.detail.clone())),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("domains", J::A(domains)),
        ])
    }
}

//! A chaos run from start to verdict: build the namespaces and links, start the nodes and the
//! delay proxy, wait for the mesh to converge, start the applications, walk the fault plan
//! (apply, hold, heal, settle), stop the producer, wait until every persisted message has
//! arrived (or a deadline passes), check, print the figures.
//!
//! Clean-up does not depend on the run ending well: the nodes, the proxy, the application
//! threads and the namespaces are owned by values whose `Drop` ends them, in that order, on
//! success, error, panic, and on SIGINT / SIGTERM / SIGHUP (which set a flag every wait of the
//! run looks at, so the run unwinds through the same drops). A run that is itself SIGKILLed
//! takes its nodes with it (death signal); its namespaces are removed by the next run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::check::{self, Verdict};
use crate::netns::{self, Lab};
use crate::node::{MeshNode, NodeSettings};
use crate::proxy::DelayProxy;
use crate::schedule::{Fault, Plan, PlanShape, Step, Timing};
use crate::topology::{NODE_PORT, Topology};
use crate::traffic::{Consumer, Producer};

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Seed of the fault plan.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Every fault kind once, or faults for a duration.
    pub shape: PlanShape,
    /// Hold and settle bounds.
    pub timing: Timing,
    /// Messages per second from the producer.
    pub rate: u64,
    /// How the nodes run.
    pub node: NodeSettings,
    /// How long to wait, after the producer stopped, for every persisted message.
    pub drain_deadline: Duration,
    /// Keep the run directory (logs, data) even when the run passes.
    pub keep: bool,
    /// The command line that reproduces this run (printed).
    pub reproduce: String,
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The plan's step.
    pub step: Step,
    /// When it was applied and healed (since the run's start).
    pub applied_at: Duration,
    /// When it was healed.
    pub healed_at: Duration,
    /// The longest time, from its application to the next one, in which no new message
    /// arrived at the destination.
    pub longest_pause: Duration,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The checker's figures.
    pub verdict: Verdict,
    /// The faults as they happened.
    pub injected: Vec<Injected>,
    /// FAILED receipts the producer got.
    pub failed: u64,
    /// Sessions of the producer and the consumer.
    pub sessions: (u32, u32),
    /// When and why the producer's and the consumer's sessions ended.
    pub session_ends: Vec<String>,
    /// Where the logs are (removed after a passing run unless kept).
    pub run_dir: PathBuf,
}

/// Set by SIGINT, SIGTERM or SIGHUP.
fn interrupted() -> &'static Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Routes SIGINT, SIGTERM and SIGHUP to the run's flag instead of ending the process.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, interrupted().clone())
            .context("install a signal handler")?;
    }
    Ok(())
}

/// Sleeps `d`, or fails once a signal asked the run to end.
fn pause(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        if interrupted().load(Ordering::Relaxed) {
            bail!("interrupted: cleaning up");
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Waits up to `within` for `ok`, polling; fails with `what` on the deadline.
fn wait_for(
    within: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if ok() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= within {
            bail!("{what}: not within {within:?}");
        }
        pause(Duration::from_millis(200))?;
    }
}

/// Milliseconds, for the figures.
fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Everything running, in the order it must be torn down (fields drop in declaration order).
struct Running {
    consumer: Option<Consumer>,
    producer: Option<Producer>,
    nodes: Vec<MeshNode>,
    proxy: Option<DelayProxy>,
    lab: Lab,
}

impl Running {
    fn node(&mut self, id: u64) -> anyhow::Result<&mut MeshNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }
}

/// Runs a chaos run and prints its schedule, progress and figures.
pub fn run(cfg: &RunConfig) -> anyhow::Result<Outcome> {
    let removed = netns::clean_stale();
    if !removed.is_empty() {
        println!(
            "removed namespaces of earlier runs that died: {}",
            removed.join(", ")
        );
    }
    let topology = Topology::two_domains(cfg.nodes)?;
    let plan = Plan::new(cfg.seed, &topology, cfg.shape, cfg.timing);
    print_plan(cfg, &topology, &plan);

    let run_dir = std::env::temp_dir().join(format!(
        "mesh-chaos-{}-seed{}",
        std::process::id(),
        cfg.seed
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("create {}", run_dir.display()))?;
    println!("logs and data: {}", run_dir.display());

    let lab = Lab::create(&topology)?;
    let mut running = Running {
        consumer: None,
        producer: None,
        nodes: Vec::new(),
        proxy: None,
        lab,
    };
    let result = drive(cfg, &topology, &plan, &mut running, &run_dir);
    // Nodes down before their data goes; everything else drops with `running`.
    for n in &mut running.nodes {
        if n.running() {
            let _ = n.kill();
        }
    }
    let passed = matches!(&result, Ok(o) if o.verdict.passed());
    for n in &running.nodes {
        n.remove_data();
    }
    drop(running);
    let leftover: Vec<String> = netns::stale_namespaces()
        .into_iter()
        .chain(own_namespaces())
        .collect();
    if !leftover.is_empty() {
        eprintln!(
            "mesh-chaos: namespaces left behind: {}",
            leftover.join(", ")
        );
    }
    if passed && !cfg.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    } else {
        println!("node logs kept in {}", run_dir.display());
    }
    result
}

/// Namespaces of this process that still exist.
fn own_namespaces() -> Vec<String> {
    let prefix = format!("{}{}-", netns::NAME_PREFIX, std::process::id());
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn print_plan(cfg: &RunConfig, topology: &Topology, plan: &Plan) {
    println!(
        "mesh-chaos: seed {}, {} nodes, {} faults over {:.0} s, {} msg/s",
        cfg.seed,
        cfg.nodes,
        plan.steps.len(),
        plan.duration().as_secs_f64(),
        cfg.rate
    );
    println!("reproduce: {}", cfg.reproduce);
    let d = |n: u32| {
        topology
            .nodes
            .iter()
            .filter(|x| x.domain == n)
            .map(|x| x.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "topology: domain 1 = nodes {}, domain 2 = nodes {}; origin {}, destination {}",
        d(1),
        d(2),
        topology.origin,
        topology.destination
    );
    for l in &topology.links {
        println!(
            "  link {}: {} - {}{}{}",
            l.index,
            l.lower,
            l.higher,
            if l.border { " (border)" } else { "" },
            if l.proxied {
                " (through the delay proxy)"
            } else {
                ""
            }
        );
    }
    println!("schedule:");
    for (i, s) in plan.steps.iter().enumerate() {
        println!(
            "  {:>3}. {:<45} hold {:>5} ms, settle {:>5} ms",
            i + 1,
            s.fault.to_string(),
            ms(s.hold),
            ms(s.settle)
        );
    }
}

fn drive(
    cfg: &RunConfig,
    topology: &Topology,
    plan: &Plan,
    running: &mut Running,
    run_dir: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    if let Some(link) = topology.proxied_link() {
        let ns = running.lab.ns(link.higher)?.to_owned();
        let listen = SocketAddr::from((
            Topology::address(link, link.higher),
            crate::topology::PROXY_PORT,
        ));
        let upstream = SocketAddr::from(([127, 0, 0, 1], NODE_PORT));
        running.proxy = Some(netns::run_in(&ns, move || {
            DelayProxy::start(listen, upstream)
        })?);
    }
    for spec in &topology.nodes {
        let ns = running.lab.ns(spec.id)?.to_owned();
        let mut node = MeshNode::new(topology, spec.id, &ns, run_dir, &cfg.node)?;
        node.start(None)?;
        running.nodes.push(node);
    }
    let converged = wait_for(
        Duration::from_secs(60),
        "every node sees all its neighbours",
        || {
            running.nodes.iter().all(|n| {
                let degree = topology.links_of(n.id).count() as u64;
                n.metric("mesh_neighbors") == Some(degree)
            })
        },
    )?;
    println!(
        "[{:>7.1} s] mesh up: every node has its neighbours ({} ms)",
        t0.elapsed().as_secs_f64(),
        ms(converged)
    );

    let local = SocketAddr::from(([127, 0, 0, 1], NODE_PORT));
    let consumer = Consumer::start(running.lab.ns(topology.destination)?, local, t0)?;
    let producer = Producer::start(
        running.lab.ns(topology.origin)?,
        local,
        topology.destination,
        cfg.rate,
        t0,
    )?;
    // Routes across the border take a moment more than neighbours: traffic flows before the
    // first fault.
    wait_for(Duration::from_secs(60), "the first message arrives", || {
        consumer.copies() > 0
    })?;
    running.consumer = Some(consumer);
    running.producer = Some(producer);
    println!("[{:>7.1} s] traffic flows", t0.elapsed().as_secs_f64());
    pause(Duration::from_secs(2))?;

    let mut injected = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let applied_at = t0.elapsed();
        apply(running, topology, &step.fault)?;
        println!(
            "[{:>7.1} s] fault {}/{}: {} ({} persisted so far)",
            applied_at.as_secs_f64(),
            i + 1,
            plan.steps.len(),
            step.fault,
            running.producer.as_ref().map_or(0, Producer::persisted)
        );
        pause(step.hold)?;
        heal(running, &step.fault)?;
        let healed_at = t0.elapsed();
        println!("[{:>7.1} s]   healed", healed_at.as_secs_f64());
        injected.push(Injected {
            step: *step,
            applied_at,
            healed_at,
            longest_pause: Duration::ZERO,
        });
        pause(step.settle)?;
        for n in &mut running.nodes {
            if !n.running() {
                bail!(
                    "node {} exited by itself (see {})",
                    n.id,
                    n.log_path().display()
                );
            }
        }
    }

    let producer = running.producer.take().context("producer")?;
    let stopped_at = t0.elapsed();
    let sent = producer.finish();
    let persisted: Vec<u64> = sent
        .sent
        .iter()
        .filter(|s| s.persisted_at.is_some())
        .map(|s| s.seq)
        .collect();
    println!(
        "[{:>7.1} s] producer stopped: {} sent, {} persisted; waiting for every persisted message",
        t0.elapsed().as_secs_f64(),
        sent.sent.len(),
        persisted.len()
    );
    let consumer = running.consumer.take().context("consumer")?;
    let drained = wait_for(
        cfg.drain_deadline,
        "every persisted message arrives",
        || consumer.has_all(&persisted),
    );
    if drained.is_ok() {
        // Late retransmissions have time to show up as duplicates.
        pause(Duration::from_secs(3))?;
    } else {
        for n in &running.nodes {
            eprintln!(
                "node {}: outbox in flight {:?}, inbox held {:?}, retransmits {:?}",
                n.id,
                n.metric("mesh_outbox_in_flight"),
                n.metric("mesh_inbox_held"),
                n.metric("mesh_retransmits_total")
            );
        }
    }
    let got = consumer.finish();
    let heals: Vec<Duration> = injected.iter().map(|f| f.healed_at).collect();
    let verdict = check::check(&sent.sent, &got.received, &got.session_ends, &heals);
    // Each fault's window ends where the next one starts (the last: where the producer stopped).
    let ends: Vec<Duration> = injected
        .iter()
        .skip(1)
        .map(|f| f.applied_at)
        .chain([stopped_at])
        .collect();
    for (f, end) in injected.iter_mut().zip(ends) {
        f.longest_pause = check::longest_pause(&got.received, f.applied_at, end);
    }
    let outcome = Outcome {
        verdict,
        injected,
        failed: sent.failed,
        sessions: (sent.sessions, got.sessions),
        session_ends: sent
            .session_errors
            .iter()
            .map(|(at, e)| format!("producer at {:.1} s: {e}", at.as_secs_f64()))
            .chain(
                got.session_ends
                    .iter()
                    .zip(&got.session_errors)
                    .map(|(at, e)| format!("consumer at {:.1} s: {e}", at.as_secs_f64())),
            )
            .collect(),
        run_dir: run_dir.to_owned(),
    };
    print_figures(cfg, &outcome);
    Ok(outcome)
}

fn apply(running: &mut Running, topology: &Topology, fault: &Fault) -> anyhow::Result<()> {
    match *fault {
        Fault::LinkCut { link } => running.lab.drop_on(&topology.links[link], 100),
        Fault::LinkLoss { link, percent } => running.lab.drop_on(&topology.links[link], percent),
        Fault::Partition => {
            for l in topology.links.iter().filter(|l| l.border) {
                running.lab.drop_on(l, 100)?;
            }
            Ok(())
        }
        Fault::Kill { node, .. } => running.node(node)?.kill(),
        Fault::SlowPeer { delay_ms, .. } => {
            running
                .proxy
                .as_ref()
                .context("no delay proxy")?
                .set_delay(Duration::from_millis(delay_ms));
            Ok(())
        }
        Fault::ClockSkew { node, offset_s } => {
            let n = running.node(node)?;
            n.terminate()?;
            n.start(Some(offset_s))
        }
    }
}

fn heal(running: &mut Running, fault: &Fault) -> anyhow::Result<()> {
    match *fault {
        Fault::LinkCut { .. } | Fault::LinkLoss { .. } | Fault::Partition => running.lab.heal_all(),
        Fault::Kill { node, .. } => running.node(node)?.start(None),
        Fault::SlowPeer { .. } => {
            if let Some(p) = &running.proxy {
                p.set_delay(Duration::ZERO);
            }
            Ok(())
        }
        Fault::ClockSkew { node, .. } => {
            let n = running.node(node)?;
            n.terminate()?;
            n.start(None)
        }
    }
}

fn print_figures(cfg: &RunConfig, o: &Outcome) {
    let v = &o.verdict;
    println!();
    println!("faults:");
    for (i, f) in o.injected.iter().enumerate() {
        let rec = v.recovery.get(i).copied().flatten();
        println!(
            "  {:>3}. {:<45} at {:>6.1} s, healed {:>6.1} s, longest pause {:>5} ms, all before the heal in {}",
            i + 1,
            f.step.fault.to_string(),
            f.applied_at.as_secs_f64(),
            f.healed_at.as_secs_f64(),
            ms(f.longest_pause),
            rec.map_or_else(|| "never".to_owned(), |d| format!("{} ms", ms(d)))
        );
    }
    println!();
    println!("figures (seed {}):", cfg.seed);
    println!("  messages sent          {}", v.sent);
    println!("  persisted (PERSISTED)  {}", v.persisted);
    println!("  received (distinct)    {}", v.received);
    println!("  copies received        {}", v.copies);
    println!("  faults injected        {}", o.injected.len());
    println!("  lost                   {}", v.lost.len());
    println!("  duplicated             {}", v.duplicated.len());
    println!(
        "  redelivered after a destination restart (same msg_id, new subscriber session) {}",
        v.redelivered_after_restart
    );
    println!("  unknown payloads       {}", v.unknown.len());
    println!("  FAILED receipts        {}", o.failed);
    println!("  sessions (producer, consumer) {:?}", o.sessions);
    for end in &o.session_ends {
        println!("    session ended: {end}");
    }
    println!(
        "  time to recover        {}",
        v.final_recovery().map_or_else(
            || "never (messages missing)".to_owned(),
            |d| format!("{} ms after the last heal", ms(d))
        )
    );
    let worst = v
        .recovery
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .and_then(|r| r.into_iter().max());
    if let Some(w) = worst {
        println!("  longest recovery       {} ms after a heal", ms(w));
    }
    if !v.lost.is_empty() {
        println!(
            "  lost seqs (first 20): {:?}",
            &v.lost[..v.lost.len().min(20)]
        );
    }
    for d in v.duplicated.iter().take(10) {
        println!(
            "  duplicated seq {}: copies (src_node, msg_id, session) {:?}",
            d.seq, d.copies
        );
    }
    println!(
        "  verdict                {}",
        if v.passed() { "PASS" } else { "FAIL" }
    );
    println!("reproduce: {}", cfg.reproduce);
}

//! `ferrocd-chaos`: runs the fault suite (see the library's documentation). As root: it makes
//! network namespaces, iptables rules and a tmpfs. `FERROCD_BIN` names the server binary.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ferrocd_chaos::faults::Fault;
use ferrocd_chaos::net::Net;
use ferrocd_chaos::run::{self, Choice, HistoryReport, Plan};

#[derive(Debug, Parser)]
#[command(about = "ferrocd's fault suite: real clusters, injected faults, checked histories")]
struct Args {
    /// Runs (each a fresh cluster); run i uses seed `seed + i`.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// The first run's seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Histories per run (each with one fault).
    #[arg(long, default_value_t = 10)]
    histories: u64,
    /// Cluster sizes to draw from.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    sizes: Vec<usize>,
    /// Fault classes to draw from (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// KV clients per history.
    #[arg(long, default_value_t = 6)]
    clients: u64,
    /// Watchers per history.
    #[arg(long, default_value_t = 2)]
    watchers: u64,
    /// Lock contenders per history.
    #[arg(long, default_value_t = 3)]
    lockers: u64,
    /// Succeed only if a violation is found: checks the checkers against a server made wrong
    /// on purpose (e.g. `FAILPOINTS=read-barrier=return`, linearizable reads without the barrier).
    #[arg(long)]
    expect_violation: bool,
    /// Auth: `on` (every client a user, a permission flipped during each fault), `off`, or
    /// `random` (half the runs, by the seed).
    #[arg(long, default_value = "random")]
    auth: String,
    /// TLS: `on` (clients and peers over TLS, the certificate rotated on disk at the start of
    /// each history), `off`, or `random` (half the runs, by the seed).
    #[arg(long, default_value = "random")]
    tls: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match chaos(&args) {
        Ok(clean) if clean != args.expect_violation => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ferrocd-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn chaos(args: &Args) -> anyhow::Result<bool> {
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.iter().map(|f| Fault::parse(f)).collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(args.sizes.iter().all(|&s| (1..=5).contains(&s)), "cluster sizes are 1 to 5");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let auth = Choice::parse("auth", &args.auth)?;
    let tls = Choice::parse("tls", &args.tls)?;
    let slots = args.sizes.iter().max().copied().unwrap_or(3) + 1;
    let net = Arc::new(Net::create(slots)?);
    // Before any thread starts: every thread of the runtime then lives in the switch namespace.
    net.enter_switch()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut interrupts = {
        let _inside = runtime.enter();
        Interrupts::install()?
    };
    let began = std::time::Instant::now();
    // Every checked history, counted as it is reported (an interrupted run's finished ones too).
    let mut all: Vec<Tally> = Vec::new();
    let mut print = |r: &HistoryReport| {
        all.push(Tally { fault: r.fault.name(), ok: r.ok(), inconclusive: r.findings.inconclusive, ops: r.ops });
        let verdict =
            if r.ok() { "ok".to_string() } else { format!("VIOLATION: {}", r.findings.violations.join("; ")) };
        println!(
            "seed {:#x} history {} [{} members] {}: {} — {} ops ({} unknown), {} watch events, {} lock holds, {:.1}s: {verdict}",
            r.run_seed,
            r.index,
            r.size,
            r.fault.name(),
            r.injected,
            r.ops,
            r.unknown,
            r.watch_events,
            r.holds,
            r.took.as_secs_f64()
        );
    };
    for i in 0..args.runs {
        let plan = Plan {
            seed: seed.wrapping_add(i),
            histories: args.histories,
            sizes: args.sizes.clone(),
            faults: faults.clone(),
            clients: args.clients,
            watchers: args.watchers,
            lockers: args.lockers,
            auth,
            tls,
        };
        net.heal()?;
        // Interrupted (SIGINT, SIGTERM): the run is dropped, which stops its members and
        // unmounts its small disk; the namespaces go when `net` does.
        let reports = runtime.block_on(async {
            tokio::select! {
                reports = run::run(Arc::clone(&net), &plan, &mut print) => reports.map(Some),
                () = interrupts.next() => Ok(None),
            }
        })?;
        let Some(reports) = reports else {
            println!("interrupted during run seed {:#x}: its unfinished history is not counted", plan.seed);
            break;
        };
        if reports.iter().any(|r| !r.ok()) {
            println!(
                "a violation: replay with `cargo xtask chaos --seed {} --runs 1 --histories {}`",
                plan.seed, args.histories
            );
            break;
        }
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    summary(&all, began.elapsed());
    Ok(all.iter().all(|t| t.ok))
}

/// What the summary counts of a history.
struct Tally {
    fault: &'static str,
    ok: bool,
    inconclusive: usize,
    ops: usize,
}

/// SIGINT and SIGTERM, caught from the start (a run's first poll can take a while before the
/// select that waits for them is polled).
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Installs the handlers; call it inside the runtime.
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

fn summary(tallies: &[Tally], took: std::time::Duration) {
    let mut per_fault: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for t in tallies {
        let entry = per_fault.entry(t.fault).or_default();
        entry.0 += 1;
        entry.1 += usize::from(!t.ok);
        entry.2 += t.inconclusive;
    }
    println!("\n| fault | histories | violations | undecided keys |\n|---|---:|---:|---:|");
    for (fault, (n, bad, undecided)) in &per_fault {
        println!("| {fault} | {n} | {bad} | {undecided} |");
    }
    let ops: usize = tallies.iter().map(|t| t.ops).sum();
    let bad = tallies.iter().filter(|t| !t.ok).count();
    println!(
        "| **all** | **{}** | **{bad}** | {} |\n\n{} checked histories, {ops} operations, {bad} with violations, in {:.0} s",
        tallies.len(),
        tallies.iter().map(|t| t.inconclusive).sum::<usize>(),
        tallies.len(),
        took.as_secs_f64()
    );
}

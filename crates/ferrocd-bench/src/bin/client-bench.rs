//! `client-bench`: `ferrocd-client` beside the `etcd-client` crate on the same workloads
//! against the same fresh ferrocd member (or etcd with `--server etcd`), the two SDKs
//! alternating within each repetition. Reports each figure's median and min–max per SDK and the
//! ratio ferrocd-client / etcd-client (above 1: ferrocd-client is faster).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ferrocd_test_utils::{Kind, Member};

#[derive(Debug, Parser)]
struct Args {
    /// Repetitions (each runs both SDKs on every workload)
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// `ferrocd` or `etcd`
    #[arg(long, default_value = "ferrocd")]
    server: String,
    /// Operations of each sequential workload
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Tasks of each concurrent workload (each does `--ops / 10` operations)
    #[arg(long, default_value_t = 64)]
    tasks: usize,
}

const VALUE: [u8; 256] = [b'v'; 256];

/// One SDK's side of the workloads.
trait Sdk: Clone + Send + Sync + 'static {
    fn put(&self, key: String) -> impl Future<Output = Result<()>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
    /// Watches `prefix` and returns once `events` events arrived.
    fn watch_until(
        &self,
        prefix: &str,
        events: usize,
        started: tokio::sync::oneshot::Sender<()>,
    ) -> impl Future<Output = Result<()>> + Send;
}

#[derive(Clone)]
struct Ours(ferrocd_client::Client);

impl Sdk for Ours {
    async fn put(&self, key: String) -> Result<()> {
        self.0.put(key, VALUE.to_vec(), None).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<()> {
        self.0.get(key, None).await?;
        Ok(())
    }

    async fn watch_until(&self, prefix: &str, events: usize, started: tokio::sync::oneshot::Sender<()>) -> Result<()> {
        let options = ferrocd_client::watch::WatchOptions::new().with_prefix();
        let mut stream = self.0.watch(prefix, Some(options)).await?;
        let _ = started.send(());
        let mut seen = 0;
        while seen < events {
            let response = stream.message().await?.context("the watch ended")?;
            seen += response.events.len();
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Theirs(etcd_client::Client);

impl Sdk for Theirs {
    async fn put(&self, key: String) -> Result<()> {
        self.0.clone().put(key, VALUE.to_vec(), None).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<()> {
        self.0.clone().get(key, None).await?;
        Ok(())
    }

    async fn watch_until(&self, prefix: &str, events: usize, started: tokio::sync::oneshot::Sender<()>) -> Result<()> {
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = self.0.clone().watch(prefix, Some(options)).await?;
        // etcd-client answers the watch call once the server confirmed it.
        let _ = started.send(());
        let mut seen = 0;
        while seen < events {
            let response = stream.message().await?.context("the watch ended")?;
            seen += response.events().len();
        }
        Ok(())
    }
}

/// A workload's figures: operations per second, and the median latency where it has one.
struct Figures {
    rate: f64,
    p50_us: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn sequential<S: Sdk>(sdk: &S, ops: usize, write: bool, tag: &str) -> Result<Figures> {
    let mut latencies = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        if write {
            sdk.put(format!("bench/{tag}/{}", i % 1000)).await?;
        } else {
            sdk.get("bench/read").await?;
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rate = ops as f64 / start.elapsed().as_secs_f64();
    Ok(Figures { rate, p50_us: Some(median(&mut latencies)) })
}

async fn concurrent<S: Sdk>(sdk: &S, tasks: usize, per_task: usize, write: bool, tag: &str) -> Result<Figures> {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let sdk = sdk.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                for i in 0..per_task {
                    if write {
                        sdk.put(format!("bench/{tag}/{t}/{}", i % 100)).await?;
                    } else {
                        sdk.get("bench/read").await?;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    Ok(Figures { rate: (tasks * per_task) as f64 / start.elapsed().as_secs_f64(), p50_us: None })
}

/// Events per second a watch receives while `tasks` writers put `events` keys under it.
async fn watch<S: Sdk>(sdk: &S, writer: &S, tasks: usize, events: usize, tag: &str) -> Result<Figures> {
    let prefix = format!("watch/{tag}/");
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let watcher = {
        let (sdk, prefix) = (sdk.clone(), prefix.clone());
        tokio::spawn(async move { sdk.watch_until(&prefix, events, started_tx).await })
    };
    started.await.context("the watch did not start")?;
    let start = Instant::now();
    let per_task = events / tasks;
    let writers: Vec<_> = (0..tasks)
        .map(|t| {
            let (writer, prefix) = (writer.clone(), prefix.clone());
            tokio::spawn(async move {
                for i in 0..per_task {
                    writer.put(format!("{prefix}{t}/{i}")).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    tokio::time::timeout(Duration::from_secs(60), watcher).await.context("events missing after 60 s")???;
    Ok(Figures { rate: (per_task * tasks) as f64 / start.elapsed().as_secs_f64(), p50_us: None })
}

const WORKLOADS: [&str; 5] =
    ["put, 1 client", "put, concurrent", "range, 1 client", "range, concurrent", "watch events"];

async fn run_all<S: Sdk>(sdk: &S, args: &Args, rep: usize, name: &str) -> Result<Vec<Figures>> {
    let tag = format!("{name}{rep}");
    let per_task = (args.ops / 10).max(1);
    Ok(vec![
        sequential(sdk, args.ops, true, &tag).await?,
        concurrent(sdk, args.tasks, per_task, true, &tag).await?,
        sequential(sdk, args.ops, false, &tag).await?,
        concurrent(sdk, args.tasks, per_task, false, &tag).await?,
        watch(sdk, sdk, args.tasks, args.tasks * per_task, &tag).await?,
    ])
}

fn spread(v: &[f64]) -> String {
    let mut v = v.to_vec();
    let m = median(&mut v);
    format!("{m:.0} ({:.0}–{:.0})", v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let kind = if args.server == "etcd" { Kind::Etcd } else { Kind::Ferrocd };
    let member = Member::start(kind, &[]);
    let url = member.url();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // results[sdk][workload] = (rates, p50s) over the repetitions.
    let mut results = vec![vec![(Vec::new(), Vec::new()); WORKLOADS.len()]; 2];
    rt.block_on(async {
        let ours = Ours(ferrocd_client::Client::connect([&url], ferrocd_client::ConnectOptions::new()).await?);
        let theirs = Theirs(etcd_client::Client::connect([&url], None).await?);
        ours.0.put("bench/read", VALUE.to_vec(), None).await?;
        for rep in 0..args.reps {
            // Alternate which SDK goes first.
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let figures = if which == 0 {
                    run_all(&ours, &args, rep, "ours").await?
                } else {
                    run_all(&theirs, &args, rep, "theirs").await?
                };
                for (w, f) in figures.into_iter().enumerate() {
                    results[which][w].0.push(f.rate);
                    if let Some(p) = f.p50_us {
                        results[which][w].1.push(p);
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    println!("client benchmark against {} ({} repetitions, median (min–max))\n", args.server, args.reps);
    println!(
        "| workload | ferrocd-client ops/s | etcd-client ops/s | ratio | ferrocd-client p50 µs | etcd-client p50 µs |"
    );
    println!("|---|---|---|---|---|---|");
    for (w, name) in WORKLOADS.iter().enumerate() {
        let (ours, theirs) = (&results[0][w], &results[1][w]);
        let ratio = median(&mut ours.0.clone()) / median(&mut theirs.0.clone());
        let p50 = |v: &Vec<f64>| if v.is_empty() { "–".to_string() } else { spread(v) };
        println!(
            "| {name} | {} | {} | {ratio:.2} | {} | {} |",
            spread(&ours.0),
            spread(&theirs.0),
            p50(&ours.1),
            p50(&theirs.1)
        );
    }
    Ok(())
}

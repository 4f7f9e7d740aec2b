//! Figures from every repetition, reduced to medians, spreads and ferrocd/etcd ratios, written as
//! Markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

/// The two servers of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Server {
    Etcd,
    Ferrocd,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Ferrocd => "ferrocd",
        }
    }
}

/// A measured quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Throughput,
    P50,
    P99,
    P999,
    CpuPerOp,
    RssMib,
    Seconds,
    /// Watch events delivered to watchers per second.
    EventsPerSec,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Self::Throughput => "ops/s",
            Self::P50 => "p50 ms",
            Self::P99 => "p99 ms",
            Self::P999 => "p99.9 ms",
            Self::CpuPerOp => "server CPU µs/op",
            Self::RssMib => "server RSS MiB",
            Self::Seconds => "seconds",
            Self::EventsPerSec => "events/s",
        }
    }

    /// The columns of the per-workload summary table.
    const SUMMARY: [Self; 5] = [Self::Throughput, Self::P50, Self::P99, Self::P999, Self::CpuPerOp];
}

/// Every sample of a run, keyed by (workload or figure name, metric).
#[derive(Debug, Default)]
pub struct Results {
    /// Names in the order they were first recorded.
    order: Vec<String>,
    samples: BTreeMap<(String, Metric), BTreeMap<Server, Vec<f64>>>,
}

/// Median, minimum and maximum of one server's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Self { median, min: sorted[0], max: sorted[n - 1] })
    }
}

impl Results {
    pub fn record(&mut self, name: &str, metric: Metric, server: Server, value: f64) {
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
        self.samples.entry((name.to_string(), metric)).or_default().entry(server).or_default().push(value);
    }

    fn spread(&self, name: &str, metric: Metric, server: Server) -> Option<Spread> {
        Spread::of(self.samples.get(&(name.to_string(), metric))?.get(&server)?)
    }

    fn ratio(&self, name: &str, metric: Metric) -> Option<f64> {
        let etcd = self.spread(name, metric, Server::Etcd)?.median;
        let ferrocd = self.spread(name, metric, Server::Ferrocd)?.median;
        (etcd > 0.0).then(|| ferrocd / etcd)
    }

    fn metrics_of(&self, name: &str) -> Vec<Metric> {
        self.samples.keys().filter(|(n, _)| n == name).map(|(_, m)| *m).collect()
    }

    /// The Markdown report: a per-workload summary of medians and ratios, the other figures, and
    /// every figure's spread.
    pub fn markdown(&self, header: &str) -> String {
        let mut out = format!("{header}\n");
        let workloads: Vec<&String> =
            self.order.iter().filter(|n| self.metrics_of(n).contains(&Metric::Throughput)).collect();
        if !workloads.is_empty() {
            out.push_str("\nMedians; each cell is etcd → ferrocd (ratio ferrocd/etcd).\n\n| workload |");
            for m in Metric::SUMMARY {
                let _ = write!(out, " {} |", m.label());
            }
            out.push_str("\n|---|");
            out.push_str(&"---:|".repeat(Metric::SUMMARY.len()));
            out.push('\n');
            for name in workloads {
                let _ = write!(out, "| {name} |");
                for m in Metric::SUMMARY {
                    out.push_str(&self.cell(name, m));
                }
                out.push('\n');
            }
        }
        let others: Vec<&String> =
            self.order.iter().filter(|n| !self.metrics_of(n).contains(&Metric::Throughput)).collect();
        if !others.is_empty() {
            out.push_str("\n| figure | etcd | ferrocd | ratio |\n|---|---:|---:|---:|\n");
            for name in others {
                for m in self.metrics_of(name) {
                    let med = |s| self.spread(name, m, s).map_or("–".into(), |s| num(s.median));
                    let _ = writeln!(
                        out,
                        "| {name} ({}) | {} | {} | {} |",
                        m.label(),
                        med(Server::Etcd),
                        med(Server::Ferrocd),
                        self.ratio(name, m).map_or("–".into(), |r| format!("**{r:.2}**"))
                    );
                }
            }
        }
        out.push_str("\n<details><summary>Spread: median [min–max] of every figure</summary>\n\n");
        out.push_str("| figure | etcd | ferrocd |\n|---|---:|---:|\n");
        for name in &self.order {
            for m in self.metrics_of(name) {
                let cell = |s| {
                    self.spread(name, m, s)
                        .map_or("–".into(), |s| format!("{} [{}–{}]", num(s.median), num(s.min), num(s.max)))
                };
                let _ = writeln!(out, "| {name} {} | {} | {} |", m.label(), cell(Server::Etcd), cell(Server::Ferrocd));
            }
        }
        out.push_str("\n</details>\n");
        out
    }

    fn cell(&self, name: &str, m: Metric) -> String {
        let med = |s| self.spread(name, m, s).map(|s| num(s.median));
        match (med(Server::Etcd), med(Server::Ferrocd), self.ratio(name, m)) {
            (Some(e), Some(f), Some(r)) => format!(" {e} → {f} (**{r:.2}**) |"),
            (e, f, _) => format!(" {} → {} |", e.unwrap_or_else(|| "–".into()), f.unwrap_or_else(|| "–".into())),
        }
    }

    /// Every sample, with medians, spreads and ratios.
    pub fn json(&self, meta: Value) -> Value {
        let mut figures = Vec::new();
        for name in &self.order {
            for m in self.metrics_of(name) {
                let mut entry = json!({ "name": name, "metric": m.label(), "ratio": self.ratio(name, m) });
                for server in [Server::Etcd, Server::Ferrocd] {
                    let samples = self.samples[&(name.clone(), m)].get(&server).cloned().unwrap_or_default();
                    let spread = Spread::of(&samples);
                    entry[server.name()] = json!({
                        "samples": samples,
                        "median": spread.map(|s| s.median),
                        "min": spread.map(|s| s.min),
                        "max": spread.map(|s| s.max),
                    });
                }
                figures.push(entry);
            }
        }
        json!({ "meta": meta, "figures": figures })
    }
}

/// Three significant figures, thousands separated.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.round());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_ratio() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let mut r = Results::default();
        for (e, f) in [(100.0, 250.0), (120.0, 200.0), (80.0, 300.0)] {
            r.record("put", Metric::Throughput, Server::Etcd, e);
            r.record("put", Metric::Throughput, Server::Ferrocd, f);
        }
        r.record("restart", Metric::Seconds, Server::Etcd, 2.0);
        r.record("restart", Metric::Seconds, Server::Ferrocd, 0.5);
        assert_eq!(r.ratio("put", Metric::Throughput), Some(2.5));
        let md = r.markdown("# run");
        assert!(md.contains("| put | 100 → 250 (**2.50**) |"), "{md}");
        assert!(md.contains("| restart (seconds) | 2.00 | 0.50 | **0.25** |"), "{md}");
        assert!(md.contains("| put ops/s | 100 [80.0–120] | 250 [200–300] |"), "{md}");
        let json = r.json(json!({}));
        assert_eq!(json["figures"][0]["ferrocd"]["samples"], json!([250.0, 200.0, 300.0]));
        assert_eq!(json["figures"][0]["ratio"], json!(2.5));
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(num(1839.4), "1,839");
        assert_eq!(num(185_758.0), "185,758");
        assert_eq!(num(0.4567), "0.46");
        assert_eq!(num(12.34), "12.3");
    }
}

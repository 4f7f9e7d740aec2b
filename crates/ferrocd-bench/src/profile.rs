//! `--profile`: where ferrocd's CPU goes during one workload, sampled with Linux `perf`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

/// A `perf record` attached to a server process.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts sampling `pid` (with call stacks) into `<out>/perf-<name>.data`.
pub fn start(pid: u32, out: &Path, name: &str) -> anyhow::Result<Recording> {
    let data = out.join(format!("perf-{name}.data"));
    let child = Command::new("perf")
        .args(["record", "--quiet", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start `perf record` (Debian package linux-perf)")?;
    Ok(Recording { child, data })
}

impl Recording {
    /// Stops sampling and writes the flat profile (self time by symbol) next to the data;
    /// answers its path.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        ferrocd_test_utils::signal(&self.child, ferrocd_test_utils::Signal::INT)?;
        let status = self.child.wait()?;
        if !self.data.exists() {
            bail!("perf record wrote nothing ({status})");
        }
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.5",
                "--sort",
                "dso,symbol",
                "-g",
                "none",
            ])
            .arg("-i")
            .arg(&self.data)
            .output()
            .context("perf report")?;
        let text = self.data.with_extension("txt");
        std::fs::write(&text, &report.stdout)?;
        Ok(text)
    }
}

/// The first `n` sample lines of a flat profile.
pub fn top(report: &Path, n: usize) -> Vec<String> {
    std::fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .take(n)
        .map(|l| {
            // perf pads its columns to the terminal-less default width: keep the words.
            let words: Vec<&str> = l.split_whitespace().filter(|w| *w != "-").collect();
            words.join(" ")
        })
        .collect()
}

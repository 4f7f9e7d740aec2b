//! Logging as etcd's `--logger zap`: structured JSON lines, to the `--log-outputs` targets.

use std::fs::OpenOptions;

use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

use crate::config::Config;

/// Installs the global subscriber for `config`'s level and outputs (openraft's own messages one
/// level quieter).
///
/// # Errors
/// A log file that cannot be opened.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let level = match config.log_level.as_str() {
        "debug" | "info" | "warn" => config.log_level.as_str(),
        _ => "error",
    };
    // openraft reports every vote and replication step at info; etcd's info log is about the
    // member, so openraft speaks at info only when debug is asked for.
    let raft = if level == "debug" { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::new(format!("{level},openraft={raft}"));
    let mut writer: Option<BoxMakeWriter> = None;
    for output in config.log_outputs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let next = match output {
            "default" | "stderr" => BoxMakeWriter::new(std::io::stderr),
            "stdout" => BoxMakeWriter::new(std::io::stdout),
            path => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("cannot open log output {path}: {e}"))?;
                BoxMakeWriter::new(std::sync::Mutex::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(w) => BoxMakeWriter::new(w.and(next)),
        });
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr)))
        .with_current_span(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

//! Logging as etcd's `--logger zap`: JSON lines with zap's keys (`level`, `ts`, `caller`,
//! `msg`, then the event's fields in order), to the `--log-outputs` targets, so a log pipeline
//! that reads etcd's logs reads ferrocd's.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        .event_format(Zap)
        .with_env_filter(filter)
        .with_writer(writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr)))
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// zap's JSON encoder as etcd configures it: `{"level":"info","ts":"…Z","caller":"dir/file:line",
/// "msg":"…",<fields>}`.
#[derive(Debug, Clone, Copy)]
pub struct Zap;

impl<S, N> FormatEvent<S, N> for Zap
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG | Level::TRACE => "debug",
        };
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        // zap's short caller: the package (here the crate) and the file, then the line.
        let krate = meta.module_path().and_then(|m| m.split("::").next()).unwrap_or("unknown");
        let file = meta.file().and_then(|f| f.rsplit(['/', '\\']).next()).unwrap_or("unknown");
        let caller = format!("{krate}/{file}:{}", meta.line().unwrap_or(0));
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(
            writer,
            r#"{{"level":"{level}","ts":{},"caller":{},"msg":{}"#,
            json(&ts),
            json(&caller),
            json(fields.message.as_deref().unwrap_or_default())
        )?;
        writer.write_str(&fields.rest)?;
        writer.write_str("}\n")
    }
}

/// `text` as a JSON string.
fn json(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// An event's fields: its message, and the rest as `,"key":value` in order.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        let _ = write!(self.rest, ",{}:{value}", json(field.name()));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.push(field, &json(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let number = serde_json::Number::from_f64(value).map_or_else(|| json(&value.to_string()), |n| n.to_string());
        self.push(field, &number);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.push(field, &json(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn lines_have_zaps_keys_in_zaps_order_then_the_fields() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&out);
        let subscriber =
            tracing_subscriber::fmt().event_format(Zap).with_writer(move || Sink(Arc::clone(&sink))).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(member_id = %"8e9e05c52164694d", revision = 7_i64, ok = true, "ready to \"serve\"");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with(r#"{"level":"warn","ts":""#), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["msg"], "ready to \"serve\"");
        assert_eq!(line["member_id"], "8e9e05c52164694d");
        assert_eq!(line["revision"], 7);
        assert_eq!(line["ok"], true);
        assert!(line["caller"].as_str().unwrap().starts_with("ferrocd_server/logging.rs:"), "{line}");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
        let keys: Vec<&str> = text.split(",\"").map(|k| k.split('"').next().unwrap()).collect();
        assert_eq!(keys[1..4], ["ts", "caller", "msg"]);
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

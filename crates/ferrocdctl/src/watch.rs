//! watch: a key, range or prefix, optionally running a command per event (`-- cmd args`), or
//! interactively (`-i`: `watch ...` and `progress` lines on stdin).

use clap::{ArgAction, Args, Parser};
use ferrocd_client::Client;
use ferrocd_client::proto::WatchResponse;
use ferrocd_client::watch::{WatchOptions, WatchStream};
use ferrocd_proto::mvccpb::event::EventType;
use tokio::io::AsyncBufReadExt;

use crate::print::Printer;
use crate::{CtlError, CtlResult, Ctx, exit, go};

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long = "prev-kv", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prev_kv: bool,
    /// [key or prefix] [range_end]
    args: Vec<String>,
    /// a command to run for every event, after `--`
    #[arg(last = true)]
    exec: Vec<String>,
}

/// One line of interactive mode: `watch [options] <key> [range_end] [-- cmd ...]`.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
enum Line {
    Watch(WatchArgs),
}

const BAD_ARGS_NUM: &str = "bad number of arguments";

impl WatchArgs {
    /// The key and options to watch, with the keys named by `ETCDCTL_WATCH_KEY` and
    /// `ETCDCTL_WATCH_RANGE_END` first.
    fn request(&self) -> Result<(String, WatchOptions), CtlError> {
        let env_key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
        let env_range = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
        let mut args = Vec::new();
        if !env_key.is_empty() {
            if !self.args.is_empty() {
                return Err(CtlError::bad_args(
                    "cannot use ETCDCTL_WATCH_KEY or ETCDCTL_WATCH_RANGE_END with command line arguments",
                ));
            }
            args.push(env_key);
            if !env_range.is_empty() {
                args.push(env_range);
            }
        }
        args.extend(self.args.iter().cloned());
        let Some(key) = args.first().cloned() else { return Err(CtlError::bad_args(BAD_ARGS_NUM)) };
        if args.len() > 2 {
            return Err(CtlError::bad_args(BAD_ARGS_NUM));
        }
        let mut options = WatchOptions::new().with_start_revision(self.rev);
        if let Some(end) = args.get(1) {
            if self.prefix {
                return Err(CtlError::bad_args("`range_end` and `--prefix` are mutually exclusive"));
            }
            options = options.with_range(end.as_bytes());
        }
        if self.prefix {
            options = options.with_prefix();
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        Ok((key, options))
    }
}

pub async fn watch(ctx: &Ctx, args: WatchArgs) -> CtlResult {
    let env_key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let env_range = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(CtlError::bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            go::quote(env_range.as_bytes())
        )));
    }
    let client = ctx.client().await?;
    if args.interactive {
        return interactive(ctx, client).await;
    }
    let (key, options) = args.request()?;
    let stream = client.watch(key, Some(options)).await.map_err(|e| CtlError::client(exit::BAD_ARGS, &e))?;
    print_stream(&ctx.printer, stream, &args.exec).await?;
    Err(CtlError::new(exit::INTERRUPTED, "watch is canceled by the server"))
}

async fn interactive(ctx: &Ctx, client: Client) -> CtlResult {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut progress: Vec<tokio::sync::mpsc::UnboundedSender<()>> = Vec::new();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| CtlError::new(exit::INVALID_INPUT, format!("Error reading watch request line: {e}")))?;
        let Some(line) = line else {
            return Err(CtlError::new(exit::INVALID_INPUT, "Error reading watch request line: EOF"));
        };
        let words = crate::kv::argify(&line).unwrap_or_default();
        match words.first().map(String::as_str) {
            None => eprintln!("Invalid command: {line} (watch and progress supported)"),
            Some("watch") if words.len() < 2 && std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default().is_empty() => {
                eprintln!("Invalid command {line} (command type or key is not provided)");
            }
            Some("watch") => {
                let args = match Line::try_parse_from(&words) {
                    Ok(Line::Watch(args)) => args,
                    Err(e) => return Err(CtlError::bad_args(e.kind().to_string())),
                };
                let (key, options) = match args.request() {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("Invalid command {line} ({})", e.message);
                        continue;
                    }
                };
                let stream = client.watch(key, Some(options)).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                progress.push(tx);
                let printer = ctx.printer.clone();
                tokio::spawn(async move {
                    if let Err(e) = print_stream(&printer, stream_with_progress(stream, &mut rx), &args.exec).await {
                        if !e.message.is_empty() {
                            eprintln!("Error: {}", e.message);
                        }
                        std::process::exit(i32::from(e.code));
                    }
                });
            }
            Some("progress") => {
                progress.retain(|tx| tx.send(()).is_ok());
            }
            Some(_) => eprintln!("Invalid command {line} (only support watch)"),
        }
    }
}

/// A watch stream that asks for a progress notification whenever `progress` says so.
fn stream_with_progress(
    stream: WatchStream,
    progress: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> ProgressStream<'_> {
    ProgressStream { stream, progress }
}

struct ProgressStream<'a> {
    stream: WatchStream,
    progress: &'a mut tokio::sync::mpsc::UnboundedReceiver<()>,
}

trait Responses {
    async fn next(&mut self) -> Result<Option<WatchResponse>, ferrocd_client::Error>;
}

impl Responses for WatchStream {
    async fn next(&mut self) -> Result<Option<WatchResponse>, ferrocd_client::Error> {
        self.message().await
    }
}

impl Responses for ProgressStream<'_> {
    async fn next(&mut self) -> Result<Option<WatchResponse>, ferrocd_client::Error> {
        loop {
            tokio::select! {
                r = self.stream.message() => return r,
                Some(()) = self.progress.recv() => self.stream.request_progress(),
            }
        }
    }
}

/// Prints every response (and runs `exec` per event) until the watch ends.
async fn print_stream(printer: &Printer, mut stream: impl Responses, exec: &[String]) -> CtlResult {
    loop {
        let response = match stream.next().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(ferrocd_client::Error::WatchCanceled { reason, compact_revision }) => {
                // clientv3's WatchResponse.Err(): compaction first, then the server's reason.
                let why = if compact_revision != 0 {
                    ferrocd_client::EtcdError::Compacted.message().to_string()
                } else {
                    reason
                };
                eprintln!("watch was canceled ({why})");
                return Ok(());
            }
            Err(e) => {
                eprintln!("watch was canceled ({})", crate::client_message(&e));
                return Ok(());
            }
        };
        if response.created && response.events.is_empty() {
            continue;
        }
        if response.canceled {
            eprintln!("watch was canceled ({})", response.cancel_reason);
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        if response.events.is_empty() && !response.canceled && response.compact_revision == 0 && revision != 0 {
            println!("progress notify: {revision}");
        }
        printer.watch(&response)?;
        if let Some((program, rest)) = exec.split_first() {
            for e in &response.events {
                let kind = EventType::try_from(e.r#type).map_or("PUT", |t| t.as_str_name());
                let kv = e.kv.clone().unwrap_or_default();
                let status = tokio::process::Command::new(program)
                    .args(rest)
                    .env("ETCD_WATCH_REVISION", revision.to_string())
                    .env("ETCD_WATCH_EVENT_TYPE", go::quote(kind.as_bytes()))
                    .env("ETCD_WATCH_KEY", go::quote(&kv.key))
                    .env("ETCD_WATCH_VALUE", go::quote(&kv.value))
                    .status()
                    .await;
                let ok = matches!(&status, Ok(s) if s.success());
                if !ok {
                    let why = match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                    let quoted: Vec<String> = exec.iter().map(|a| go::quote(a.as_bytes())).collect();
                    eprintln!("command [{}] error ({why})", quoted.join(" "));
                    return Err(CtlError::new(exit::ERROR, ""));
                }
            }
        }
        if response.canceled {
            return Ok(());
        }
    }
}

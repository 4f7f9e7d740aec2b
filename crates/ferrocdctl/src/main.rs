//! `ferrocdctl`: etcdctl's v3 command set on `ferrocd-client` — the same commands, flags,
//! `ETCDCTL_*` environment, output formats (`simple`, `json`, `fields`, `protobuf`, `table`,
//! `--hex`), messages and exit codes, so scripts written for etcdctl run unchanged.

mod auth;
mod cluster;
mod go;
mod json;
mod kv;
mod lease;
mod mirror;
mod print;
mod progress;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use ferrocd_client::{Client, ConnectOptions, TlsOptions};

use crate::print::{Format, Printer};

/// etcdctl's exit codes.
pub mod exit {
    pub const ERROR: u8 = 1;
    pub const BAD_CONNECTION: u8 = 2;
    pub const INVALID_INPUT: u8 = 3;
    pub const BAD_FEATURE: u8 = 4;
    pub const INTERRUPTED: u8 = 5;
    pub const IO: u8 = 6;
    pub const BAD_ARGS: u8 = 128;
}

/// A failure: printed as `Error: <message>` with etcdctl's exit code.
#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

impl CtlError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CtlError { code, message: message.into() }
    }

    pub fn bad_args(message: impl Into<String>) -> Self {
        CtlError::new(exit::BAD_ARGS, message)
    }

    pub fn bad_feature(message: impl Into<String>) -> Self {
        CtlError::new(exit::BAD_FEATURE, message)
    }

    pub fn io(e: &std::io::Error) -> Self {
        CtlError::new(exit::IO, e.to_string())
    }

    /// A client error as etcdctl words it: the server's message, or `context deadline
    /// exceeded` when no server answered in time.
    pub fn client(code: u8, e: &ferrocd_client::Error) -> Self {
        CtlError::new(code, client_message(e))
    }
}

pub fn client_message(e: &ferrocd_client::Error) -> String {
    use ferrocd_client::Error;
    match e {
        Error::DeadlineExceeded { last, .. } if last.etcd().is_some() => last.to_string(),
        Error::DeadlineExceeded { .. } => "context deadline exceeded".into(),
        Error::Grpc(status) if status.code() == tonic::Code::Unavailable => "context deadline exceeded".into(),
        other => other.to_string(),
    }
}

pub type CtlResult = Result<(), CtlError>;

#[derive(Debug, Parser)]
#[command(name = "etcdctl", version = None, disable_version_flag = true, infer_subcommands = true, args_override_self = true)]
#[command(about = "A simple command line client for etcd3 (ferrocd's etcdctl).")]
pub struct Cli {
    /// gRPC endpoints
    #[arg(long, global = true, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// enable client-side debug logging
    #[arg(long, global = true, env = "ETCDCTL_DEBUG", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    debug: bool,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(short = 'w', long = "write-out", global = true, env = "ETCDCTL_WRITE_OUT", default_value = "simple")]
    write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    hex: bool,
    /// dial timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = go::parse_duration)]
    dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = go::parse_duration)]
    command_timeout: Duration,
    /// keepalive time for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = go::parse_duration)]
    keepalive_time: Duration,
    /// keepalive timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = go::parse_duration)]
    keepalive_timeout: Duration,
    /// disable transport security for client connections
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    insecure_transport: bool,
    /// accept insecure SRV records describing cluster endpoints
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_DISCOVERY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    insecure_discovery: bool,
    /// skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    insecure_skip_tls_verify: bool,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    cert: Option<String>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    key: Option<String>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<String>,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    password: Option<String>,
    /// domain name to query for SRV records describing cluster endpoints
    #[arg(short = 'd', long, global = true, env = "ETCDCTL_DISCOVERY_SRV")]
    discovery_srv: Option<String>,
    /// service name to query when using DNS discovery
    #[arg(long, global = true, env = "ETCDCTL_DISCOVERY_SRV_NAME")]
    discovery_srv_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(kv::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Membership related commands
    #[command(subcommand)]
    Member(cluster::MemberCommand),
    /// Endpoint related commands
    Endpoint(cluster::EndpointArgs),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(cluster::AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(cluster::DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader(cluster::MoveLeaderArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(cluster::SnapshotCommand),
    /// Prints the version of etcdctl
    Version,
    /// Acquires a named lock
    Lock(cluster::LockArgs),
    /// Observes and participates in leader election
    Elect(cluster::ElectArgs),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// User related commands
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Role related commands
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Makes a mirror at the destination etcd cluster
    MakeMirror(mirror::MakeMirrorArgs),
    /// commands for checking properties of the etcd cluster
    #[command(subcommand)]
    Check(mirror::CheckCommand),
}

/// The TLS files of a connection: the global `--cert`/`--key`/`--cacert`, or make-mirror's
/// `--dest-*`.
#[derive(Debug, Default)]
pub struct TlsFiles<'a> {
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    pub cacert: Option<&'a str>,
}

/// What every command gets: the parsed global flags, the printer, a way to connect.
#[derive(Debug)]
pub struct Ctx {
    pub cli: Cli,
    pub printer: Printer,
}

impl Ctx {
    pub fn endpoints(&self) -> Vec<String> {
        self.cli.endpoints.clone()
    }

    /// A client of the given endpoints with the global flags' settings.
    pub async fn client_of(&self, endpoints: &[String]) -> Result<Client, CtlError> {
        let cli = &self.cli;
        let tls = TlsFiles { cert: cli.cert.as_deref(), key: cli.key.as_deref(), cacert: cli.cacert.as_deref() };
        self.connect(endpoints, &tls, true).await
    }

    /// A client of `endpoints` with the global dial and keepalive settings, the given TLS files,
    /// and the global `--user` when `authenticate`.
    pub async fn connect(
        &self,
        endpoints: &[String],
        tls: &TlsFiles<'_>,
        authenticate: bool,
    ) -> Result<Client, CtlError> {
        let cli = &self.cli;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cli.dial_timeout)
            .with_timeout(cli.command_timeout)
            .with_keep_alive(cli.keepalive_time, cli.keepalive_timeout);
        let secure = tls.cert.is_some() || tls.cacert.is_some();
        if secure || tls.key.is_some() {
            let read = |path: &str| std::fs::read(path).map_err(|e| CtlError::bad_args(format!("{path}: {e}")));
            let mut options_tls = TlsOptions::new();
            if let Some(ca) = tls.cacert {
                options_tls = options_tls.with_ca(read(ca)?);
            }
            if let (Some(cert), Some(key)) = (tls.cert, tls.key) {
                options_tls = options_tls.with_identity(read(cert)?, read(key)?);
            }
            options = options.with_tls(options_tls);
        }
        if let (true, Some(user)) = (authenticate, &cli.user) {
            let (name, password) = match (user.split_once(':'), &cli.password) {
                (Some(_), Some(_)) => {
                    return Err(CtlError::bad_args(
                        "--user flag shouldn't include password when --password flag is set",
                    ));
                }
                (Some((name, password)), None) => (name.to_string(), password.to_string()),
                (None, Some(password)) => (user.clone(), password.clone()),
                (None, None) => {
                    let password = rpassword::prompt_password("Password: ")
                        .map_err(|e| CtlError::bad_args(format!("failed to get password: {e}")))?;
                    (user.clone(), password)
                }
            };
            options = options.with_user(name, password);
        } else if authenticate && cli.password.is_some() {
            return Err(CtlError::bad_args("username is empty"));
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| if e.contains("://") || !secure { e.clone() } else { format!("https://{e}") })
            .collect();
        Client::connect(&endpoints, options).await.map_err(|e| CtlError::client(exit::BAD_CONNECTION, &e))
    }

    pub async fn client(&self) -> Result<Client, CtlError> {
        self.client_of(&self.endpoints()).await
    }
}

/// etcdctl's `pkg/flags` checks of the `ETCDCTL_*` environment: a variable that names no flag
/// is warned about, one shadowed by a flag given on the command line is fatal.
fn check_environment(matches: &clap::ArgMatches) -> CtlResult {
    let command = Cli::command();
    let flags: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_id().to_string(), a.get_env()?.to_string_lossy().into_owned())))
        .collect();
    for (name, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        let Some(suffix) = name.strip_prefix("ETCDCTL_") else { continue };
        if matches!(suffix, "API" | "WATCH_KEY" | "WATCH_RANGE_END") {
            continue;
        }
        match flags.iter().find(|(_, env)| *env == name) {
            None => log_line(
                'W',
                &format!("unrecognized environment variable {name}={}", std::env::var(&name).unwrap_or_default()),
            ),
            Some((id, _)) if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) => {
                log_line(
                    'C',
                    &format!(
                        "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                        go::quote(name.as_bytes())
                    ),
                );
                return Err(CtlError::new(exit::ERROR, String::new()));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A log line as etcd's capnslog writes it to stderr.
fn log_line(level: char, message: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = (now.as_secs() / 86_400, now.as_secs() % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    eprintln!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06} {level} | pkg/flags: {message}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_micros()
    );
}

/// Days since 1970-01-01 as a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

async fn run(ctx: Ctx, command: Command) -> CtlResult {
    match command {
        Command::Get(a) => kv::get(&ctx, a).await,
        Command::Put(a) => kv::put(&ctx, a).await,
        Command::Del(a) => kv::del(&ctx, a).await,
        Command::Txn(a) => kv::txn(&ctx, a).await,
        Command::Compaction(a) => kv::compaction(&ctx, a).await,
        Command::Watch(a) => watch::watch(&ctx, a).await,
        Command::Lease(c) => lease::run(&ctx, c).await,
        Command::Member(c) => cluster::member(&ctx, c).await,
        Command::Endpoint(a) => cluster::endpoint(&ctx, a).await,
        Command::Alarm(c) => cluster::alarm(&ctx, c).await,
        Command::Defrag(a) => cluster::defrag(&ctx, a).await,
        Command::MoveLeader(a) => cluster::move_leader(&ctx, a).await,
        Command::Snapshot(c) => cluster::snapshot(&ctx, c).await,
        Command::Version => {
            // The etcd release whose API ferrocd serves, as etcdctl words it, then our own.
            print!("etcdctl version: 3.6.0\nAPI version: 3.6\nferrocdctl version: {}\n", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Lock(a) => cluster::lock(&ctx, a).await,
        Command::Elect(a) => cluster::elect(&ctx, a).await,
        Command::Auth(c) => auth::auth(&ctx, c).await,
        Command::User(c) => auth::user(&ctx, c).await,
        Command::Role(c) => auth::role(&ctx, c).await,
        Command::MakeMirror(a) => mirror::make_mirror(&ctx, a).await,
        Command::Check(c) => mirror::check(&ctx, c).await,
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let result = check_environment(&matches).and_then(|()| {
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| CtlError::bad_args(e.to_string()))?;
        let format = Format::parse(&cli.write_out)?;
        let command = std::mem::replace(&mut cli.command, Command::Version);
        let printer = Printer { format, hex: cli.hex, value_only: false };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| CtlError::io(&e))?;
        runtime.block_on(run(Ctx { cli, printer }, command))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("Error: {}", e.message);
            }
            ExitCode::from(e.code)
        }
    }
}

//! `ferrocdutl`: etcdutl's offline snapshot tools for ferrocd data directories.
//!
//! - `ferrocdutl snapshot restore <file>` builds a member's data directory from a snapshot in
//!   etcd's format — taken from ferrocd or from a real etcd (`etcdctl snapshot save`) — with
//!   etcdutl's flags; start `ferrocd` on it with the same `--name` and `--data-dir`.
//! - `ferrocdutl snapshot status <file>` prints its hash, revision, keys, size and version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrocd_backup::RestoreOptions;
use ferrocd_server::backup::{self, RestoreRequest};
use ferrocd_server::config::Config;

#[derive(Debug, Parser)]
#[command(name = "ferrocdutl", about = "Offline tools for ferrocd data directories and etcd snapshots", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Snapshots in etcd's format.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Prints the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Restores a member's data directory from a snapshot.
    Restore(RestoreArgs),
    /// Prints a snapshot's hash, revision, total keys, total size and storage version.
    Status {
        file: PathBuf,
        /// simple or json.
        #[arg(short = 'w', long = "write-out", default_value = "simple")]
        write_out: String,
    },
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    file: PathBuf,
    /// The data directory to create (`<name>.ferrocd` by default, as the server's).
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// The restored member's name.
    #[arg(long, default_value = "default")]
    name: String,
    /// The new cluster's members (`name=peer-url,...`).
    #[arg(long = "initial-cluster", default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// The new cluster's token.
    #[arg(long = "initial-cluster-token", default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// The restored member's peer URLs.
    #[arg(long = "initial-advertise-peer-urls", default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Accept a database file without the snapshot's SHA-256 (copied from a data directory).
    #[arg(long = "skip-hash-check")]
    skip_hash_check: bool,
    /// Move the revision this far past the snapshot's newest.
    #[arg(long = "bump-revision", default_value_t = 0)]
    bump_revision: u64,
    /// Compact at the bumped revision (required with --bump-revision).
    #[arg(long = "mark-compacted")]
    mark_compacted: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // etcdutl's exit code for bad arguments.
            return if e.use_stderr() { ExitCode::from(128) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Version => {
            println!("ferrocdutl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.6");
            Ok(())
        }
        Command::Snapshot { command: SnapshotCommand::Status { file, write_out } } => status(&file, &write_out),
        Command::Snapshot { command: SnapshotCommand::Restore(args) } => restore(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let mut flags = vec![
        "ferrocd".to_string(),
        format!("--name={}", args.name),
        format!("--initial-cluster={}", args.initial_cluster),
        format!("--initial-cluster-token={}", args.initial_cluster_token),
        format!("--initial-advertise-peer-urls={}", args.initial_advertise_peer_urls),
    ];
    if let Some(dir) = &args.data_dir {
        flags.push(format!("--data-dir={}", dir.display()));
    }
    let config = Config::try_parse_from(flags)?;
    let options = RestoreOptions { bump_revision: args.bump_revision, mark_compacted: args.mark_compacted };
    // A progress line while it runs, when stderr is a terminal.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let show = |r: &ferrocd_backup::Restored| {
        let rate = r.records as f64 / started.elapsed().as_secs_f64().max(1e-3);
        eprint!("\rRestoring snapshot: {} key revisions ({rate:.0}/s)\x1b[K", r.records);
    };
    let request =
        RestoreRequest { snapshot: &args.file, config: &config, skip_hash_check: args.skip_hash_check, options };
    let restored = backup::restore_reporting(&request, &|r| {
        if terminal {
            show(r);
        }
    })?;
    if terminal && restored.records >= ferrocd_backup::PROGRESS_EVERY {
        show(&restored);
        eprintln!();
    }
    eprintln!(
        "restored snapshot {} into {}: revision {}, {} key revisions, {} leases, {} users, {} roles",
        args.file.display(),
        config.data_dir().display(),
        restored.revision,
        restored.records,
        restored.leases,
        restored.users,
        restored.roles
    );
    Ok(())
}

fn status(file: &std::path::Path, write_out: &str) -> anyhow::Result<()> {
    let s = ferrocd_backup::status(file)?;
    match write_out {
        "simple" => {
            println!("{:x}, {}, {}, {}, {}", s.hash, s.revision, s.total_keys, si_bytes(s.total_size), s.version);
        }
        "json" => {
            let json = serde_json::json!({
                "hash": s.hash, "revision": s.revision, "totalKey": s.total_keys,
                "totalSize": s.total_size, "version": s.version,
            });
            println!("{json}");
        }
        other => anyhow::bail!("unsupported output format {other:?} (simple or json)"),
    }
    Ok(())
}

/// A size as go-humanize's `Bytes` prints it (SI units: `25 kB`, `2.1 MB`).
fn si_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let s = size as f64;
    let e = (s.ln() / 1000f64.ln()).floor();
    let unit = UNITS[e as usize];
    let value = (s / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 { format!("{value:.1} {unit}") } else { format!("{value:.0} {unit}") }
}

#[cfg(test)]
mod tests {
    use super::si_bytes;

    #[test]
    fn sizes_print_as_go_humanize_does() {
        assert_eq!(si_bytes(5), "5 B");
        assert_eq!(si_bytes(999), "999 B");
        assert_eq!(si_bytes(20480), "20 kB");
        assert_eq!(si_bytes(2_100_000), "2.1 MB");
        assert_eq!(si_bytes(1_000_000_000), "1.0 GB");
    }
}

//! The `ferrocd` binary: etcd's command line, a single-member server, graceful stop on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ferrocd_server::{Config, Server, logging};

// jemalloc: a third less CPU per request than glibc's malloc under the many small, short-lived
// allocations of request handling (measured with `cargo xtask bench`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    if config.version {
        print!("{}", Config::version_text());
        return ExitCode::SUCCESS;
    }
    // Test builds only: fault injection points named in `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    if let Err(e) = logging::init(&config) {
        eprintln!("ferrocd: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("ferrocd").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrocd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config));
    // Work still on the blocking pool (a storage call that failed midway, say) must not keep a
    // stopping member alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "ferrocd stopped");
            eprintln!("ferrocd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut server = Server::start(&config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        // A listener failed (an error), or the member was removed from the cluster.
        result = server.wait() => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
        _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
    }
    server.shutdown().await
}

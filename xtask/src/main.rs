//! `cargo xtask`: the project's automation, written in Rust.
//!
//! - `codegen [--check]`: regenerate `crates/ferrocd-proto/src/gen/` from `proto/` (pure Rust, no
//!   `protoc`); with `--check`, fail when the committed code is stale.
//! - `deps`: install the system packages the build and the tests need (Debian).
//! - `test`: `deps`, then every test of the workspace.
//! - `lint`: rustfmt, clippy with warnings denied, the tidy checks.
//! - `serve [FLAGS...]`: `deps`, then build and start a single-node `ferrocd` (on
//!   127.0.0.1:2379 unless flags say otherwise).
//! - `bench [ARGS...]`: `deps`, then build ferrocd and `ferrocd-bench` (release) and measure
//!   ferrocd against etcd; `cargo xtask bench -- --help` lists the options. Reports go to
//!   `<target dir>/bench/`.
//! - `chaos [--release] [ARGS...]`: the fault suite (`crates/ferrocd-chaos`, as root): builds the
//!   server and the suite, then runs it; `cargo xtask chaos -- --help` lists its options.
//! - `clean-room [--quick]`: the README's commands in a fresh Debian root (debootstrap +
//!   chroot), proving they set up a new machine by themselves; `--quick` checks the packages
//!   and the build script that needs them.
//! - `ci`: what CI runs: `lint`, then `test`.

mod clean_room;
mod codegen;
mod tidy;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().map(|(c, r)| (c.as_str(), r)).unwrap_or(("help", &[]));
    let result = match cmd {
        "codegen" => codegen::run(rest.iter().any(|a| a == "--check")),
        "deps" => deps(),
        "test" => deps().and_then(|()| test(rest)),
        "lint" => lint(),
        "serve" => deps().and_then(|()| serve(rest)),
        "bench" => deps().and_then(|()| bench(rest)),
        "clean-room" => clean_room::run_clean_room(rest),
        "chaos" => chaos(rest),
        "ci" => deps().and_then(|()| lint()).and_then(|()| test(rest)),
        _ => {
            eprintln!(
                "usage: cargo xtask <codegen [--check] | deps | test | lint | serve [flags] | bench [args] | chaos [args] | clean-room [--quick] | ci>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn run(cmd: &mut Command) -> Result {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}")) }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace this xtask runs for. Cargo sets `CARGO_MANIFEST_DIR` when it runs the
/// binary or its tests; the compile-time value is only a fallback, because an artifact built in
/// another checkout sharing the target directory may be reused here.
fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    manifest_dir.parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, or `target/` in the workspace.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Debian packages, each with the file whose presence shows it is installed: the file the build
/// or the tests actually use, not merely the package's main binary (`protoc` alone cannot compile
/// etcd's protos without the well-known types of `libprotobuf-dev`). Probes are glob patterns, so
/// any LLVM version satisfies libclang.
///
/// - `g++`, `make`: RocksDB's C++ (the `cc` crate) and jemalloc's configure-and-make build;
/// - `libclang-dev`: RocksDB's bindings (bindgen loads `libclang.so` and clang's own headers);
/// - `protobuf-compiler`, `libprotobuf-dev`: the `etcd-client` crate's build script, which
///   compiles etcd's protos, importing `google/protobuf/descriptor.proto`;
/// - `etcd-client`, `etcd-server`: etcdctl and etcd 3.4, the outside oracles of the tests and
///   the bench.
const PACKAGES: &[(&str, &str)] = &[
    ("g++", "/usr/bin/g++"),
    ("make", "/usr/bin/make"),
    ("libclang-dev", "/usr/lib/llvm-*/lib/libclang.so"),
    ("libclang-dev", "/usr/lib/llvm-*/lib/clang/*/include/stddef.h"),
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("libprotobuf-dev", "/usr/include/google/protobuf/descriptor.proto"),
    ("etcd-client", "/usr/bin/etcdctl"),
    ("etcd-server", "/usr/bin/etcd"),
];

fn deps() -> Result {
    install(PACKAGES)
}

/// Whether some file matches the glob `pattern`.
fn present(pattern: &str) -> bool {
    glob::glob(pattern).is_ok_and(|mut paths| paths.any(|p| p.is_ok()))
}

/// The packages of `packages` whose probe finds nothing, each once, in order.
fn missing<'a>(packages: &[(&'a str, &str)]) -> Vec<&'a str> {
    let mut missing: Vec<&str> = Vec::new();
    for (pkg, probe) in packages {
        if !present(probe) && !missing.contains(pkg) {
            missing.push(pkg);
        }
    }
    missing
}

fn install(packages: &[(&str, &str)]) -> Result {
    let missing = missing(packages);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.arg("apt-get");
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        run(&mut cmd)
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)?;
    let still = self::missing(packages);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("installed, yet still missing what they should provide: {}", still.join(" ")))
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn test(extra: &[String]) -> Result {
    run(cargo().args(["test", "--workspace", "--all-targets", "--no-fail-fast"]).args(extra))?;
    // `--all-targets` leaves doctests out; they run after, once the binaries they start exist.
    if extra.is_empty() { run(cargo().args(["test", "--workspace", "--doc", "--no-fail-fast"])) } else { Ok(()) }
}

fn lint() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    codegen::run(true)?;
    tidy::check()
}

fn serve(flags: &[String]) -> Result {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--package", "ferrocd-server", "--bin", "ferrocd", "--"]);
    if !flags.iter().any(|f| f.starts_with("--listen-client-urls")) {
        cmd.args(["--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379"]);
    }
    run(cmd.args(flags))
}

/// The fault suite: the server (with its test-only failpoints, as the tests build it, so the
/// two builds share their artifacts) and the suite, then a run with `args`.
fn chaos(args: &[String]) -> Result {
    install(&[("iproute2", "/usr/sbin/ip"), ("iptables", "/usr/sbin/iptables"), ("etcd-client", "/usr/bin/etcdctl")])?;
    let release = args.iter().any(|a| a == "--release");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--release" && *a != "--").collect();
    let mut build = cargo();
    build.args([
        "build",
        "--package",
        "ferrocd-server",
        "--bin",
        "ferrocd",
        "--package",
        "ferrocd-chaos",
        "--bin",
        "ferrocd-chaos",
    ]);
    build.args(["--features", "ferrocd-server/failpoints"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let bin = target_dir().join(if release { "release" } else { "debug" });
    run(Command::new(bin.join("ferrocd-chaos")).env("FERROCD_BIN", bin.join("ferrocd")).args(args))
}

fn bench(args: &[String]) -> Result {
    if args.iter().any(|a| a.starts_with("--profile")) {
        install(&[("linux-perf", "/usr/bin/perf")])?;
    }
    // Two builds, so the server's dependency features match `cargo xtask serve`'s and its
    // RocksDB build is shared.
    run(cargo().args(["build", "--release", "--package", "ferrocd-server", "--bin", "ferrocd"]))?;
    run(cargo().args(["build", "--release", "--package", "ferrocd-bench"]))?;
    let target = target_dir();
    let release = target.join("release");
    run(Command::new(release.join("ferrocd-bench"))
        .env("FERROCD_BIN", release.join("ferrocd"))
        .arg("--out")
        .arg(target.join("bench"))
        .args(args))
}

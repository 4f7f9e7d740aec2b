//! `cargo xtask clean-room [--quick]`: the README's two commands on a machine that has nothing
//! yet, proved in a fresh Debian root rather than assumed from the machine at hand.
//!
//! A minimal Debian bookworm (`debootstrap --variant=minbase`) plus a C compiler and CA
//! certificates (with the machine's locally added ones) — what a new machine has before anyone
//! touches it — gets the workspace's files
//! at `/src` and the Rust toolchain bind-mounted read-only at `/opt/rust`. Cargo's registry and
//! the build start empty. Inside a `chroot`:
//!
//! - full: `cargo xtask serve` (run until it answers etcdctl, then stopped), then `cargo xtask
//!   test`: both README commands, RocksDB built from nothing — most of an hour on 2 cores;
//! - `--quick` (what CI runs): `cargo xtask deps`, then a check build of the end-to-end tests
//!   (RocksDB's C++ included: the tests depend on the server, and build scripts run even in a
//!   check; about 15 minutes on 2 cores), whose `etcd-client` dependency compiles etcd's protos
//!   with the system `protoc` in its build script — the step a missing `libprotobuf-dev` once
//!   broke on new machines while CI stayed green.
//!
//! Mounts are made in a private mount namespace (`unshare --mount`), so they vanish with it and
//! removing the root can never reach through a bind mount into the host. The root lives under
//! the target directory; the downloaded packages of `debootstrap` are kept beside it as a
//! tarball, so a later run installs them again without downloading them again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, install, run, target_dir, workspace_root};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// What a fresh machine already has beyond `minbase`: a C compiler (cargo links with it) and
/// the CA certificates cargo needs to reach its registry. Nothing else: the rest is for the
/// README's commands to install.
const BASE: &str = "ca-certificates,gcc,libc6-dev";

pub(crate) fn run_clean_room(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(unknown) = args.iter().find(|a| *a != "--quick") {
        return Err(format!("unknown argument {unknown} (usage: cargo xtask clean-room [--quick])"));
    }
    install(&[("debootstrap", "/usr/sbin/debootstrap")])?;
    let dir = target_dir().join("clean-room");
    let root = dir.join(SUITE);
    let started = Instant::now();
    fresh_root(&dir, &root)?;
    eprintln!("xtask clean-room: {SUITE} root ready in {:.0} s", started.elapsed().as_secs_f64());
    copy_workspace(&root.join("src"))?;
    if !quick {
        for port in [2379, 2380] {
            std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
                format!("127.0.0.1:{port} is in use ({e}); `cargo xtask serve` listens there by default")
            })?;
        }
    }
    let script = if quick { QUICK } else { FULL };
    let toolchain = toolchain()?;
    let inner = Instant::now();
    let result = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-euc", MOUNT_AND_CHROOT, "clean-room"])
        .arg(&root)
        .arg(&toolchain)
        .arg(script));
    eprintln!(
        "xtask clean-room: {} {} in {:.0} s",
        if quick { "quick check" } else { "both README commands" },
        if result.is_ok() { "passed" } else { "FAILED" },
        inner.elapsed().as_secs_f64()
    );
    result
}

/// Sets up the mounts (inside the private namespace) and runs `$3` in the chroot `$1` with the
/// toolchain `$2`, under an environment as bare as a new login's.
const MOUNT_AND_CHROOT: &str = r#"
root=$1 toolchain=$2 script=$3
mkdir -p "$root/opt/rust"
mount --bind "$toolchain" "$root/opt/rust"
mount -o remount,bind,ro "$root/opt/rust"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The machine's own trust: CA certificates added locally (a network that inspects TLS needs
# them to reach crates.io), as a new machine on that network has them.
if [ -d /usr/local/share/ca-certificates ]; then
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  bash -euc "$script"
"#;

/// The README's first command, until the server answers, then its second.
const FULL: &str = r#"
cd /src
echo "clean-room: cargo xtask serve"
started=$SECONDS
setsid cargo xtask serve > /src/serve.log 2>&1 &
server=$!
while [ $((SECONDS - started)) -lt 7200 ]; do
  if [ -x /usr/bin/etcdctl ] && etcdctl --endpoints=127.0.0.1:2379 put clean-room ok >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat /src/serve.log; echo "clean-room: the server exited"; exit 1; fi
  sleep 1
done
test "$(etcdctl --endpoints=127.0.0.1:2379 get clean-room --print-value-only)" = ok
echo "clean-room: the server answered etcdctl $((SECONDS - started)) s after the command (its build included); stopping it"
kill -TERM -- -$server
wait $server || true
test -d /src/default.ferrocd
echo "clean-room: cargo xtask test"
cargo xtask test
"#;

/// What CI runs: the packages, then the build script that needs them.
const QUICK: &str = r#"
cd /src
cargo xtask deps
cargo check --quiet --tests --package ferrocd-tests
echo "clean-room: deps installed; the tests' dependencies (etcd-client's protos among them) compiled"
"#;

/// A new root under `dir`, from the cached package tarball when there is one.
fn fresh_root(dir: &Path, root: &Path) -> Result {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root.exists() {
        refuse_if_mounted(root)?;
        std::fs::remove_dir_all(root).map_err(|e| format!("remove {}: {e}", root.display()))?;
    }
    let tarball = dir.join(format!("{SUITE}-debs.tgz"));
    if !tarball.exists() {
        let partial = tarball.with_extension("partial");
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={BASE}"), "--make-tarball"])
            .arg(&partial)
            .args([SUITE])
            .arg(dir.join("tarball-work"))
            .arg(MIRROR))?;
        std::fs::rename(&partial, &tarball).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(dir.join("tarball-work"));
    }
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={BASE}"), "--unpack-tarball"])
        .arg(&tarball)
        .args([SUITE])
        .arg(root)
        .arg(MIRROR))
}

/// Mounts live only in the namespace of a run; one still visible here means something else
/// mounted it, and deleting through it could reach the host.
fn refuse_if_mounted(root: &Path) -> Result {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = root.to_string_lossy();
    if let Some(line) = mounts.lines().find(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&*prefix))) {
        return Err(format!("{} has a mount in it ({line}); unmount it first", root.display()));
    }
    Ok(())
}

/// The workspace as a clean clone of it has it: the committed tree (`git archive HEAD`), so
/// what is proved is what others get, never an edit in progress.
fn copy_workspace(dest: &Path) -> Result {
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let archive = Command::new("git")
        .current_dir(workspace_root())
        .args(["archive", "--format=tar", "HEAD"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("git archive: {e}"))?;
    let mut untar = Command::new("tar");
    untar.arg("-x").arg("-C").arg(dest).stdin(archive.stdout.ok_or("git archive's output")?);
    run(&mut untar)?;
    let head = Command::new("git").current_dir(workspace_root()).args(["rev-parse", "--short", "HEAD"]).output();
    let head = head.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    eprintln!("xtask clean-room: the committed tree ({head}) copied to /src");
    Ok(())
}

/// The directory of the Rust toolchain running this xtask (`rustc --print sysroot`).
fn toolchain() -> Result<PathBuf> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc --print sysroot: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("bin/cargo").exists() {
        Ok(sysroot)
    } else {
        Err(format!("{} has no bin/cargo", sysroot.display()))
    }
}

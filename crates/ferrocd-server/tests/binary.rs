//! The `ferrocd` binary itself. Having an integration test here also makes `cargo test` build
//! the binary, which the end-to-end tests in `tests/` start.

use std::process::Command;

#[test]
fn version_prints_etcds_lines_first() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocd")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("etcd Version: 3.6.0\nGit SHA: "), "{text}");
    assert!(text.contains("ferrocd Version: "), "{text}");
}

#[test]
fn help_names_etcds_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocd")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--listen-client-urls", "--initial-cluster-token", "--max-txn-ops", "--quota-backend-bytes"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

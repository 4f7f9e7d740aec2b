//! Tidy checks: file headers, lint inheritance and the layering rules of ARCHITECTURE.md,
//! checked against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Result, cargo, workspace_root};

/// What a client (the SDK, the CLI) must never pull: storage, server, RocksDB.
const SERVER_SIDE: &[&str] = &[
    "rocksdb",
    "ferrocd-engine",
    "ferrocd-engine-rocks",
    "ferrocd-mvcc",
    "ferrocd-watch",
    "ferrocd-lease",
    "ferrocd-auth",
    "ferrocd-raft",
    "ferrocd-server",
    "ferrocd-backup",
];

/// `(crate, crates it must never depend on, directly or not)`.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("ferrocd-engine", &["ferrocd-proto", "ferrocd-types", "ferrocd-mvcc", "ferrocd-server", "rocksdb"]),
    ("ferrocd-types", &["ferrocd-engine", "rocksdb", "tonic"]),
    ("ferrocd-mvcc", &["rocksdb", "ferrocd-engine-rocks", "ferrocd-lease", "ferrocd-auth", "ferrocd-watch"]),
    ("ferrocd-proto", &["rocksdb", "ferrocd-engine"]),
    // The watch hub reads history through its own trait; the lessor knows no keyspace.
    ("ferrocd-watch", &["rocksdb", "ferrocd-engine", "ferrocd-mvcc", "ferrocd-lease", "ferrocd-auth", "ferrocd-raft"]),
    (
        "ferrocd-lease",
        &["rocksdb", "ferrocd-mvcc", "ferrocd-watch", "ferrocd-auth", "ferrocd-raft", "ferrocd-proto", "tokio"],
    ),
    // Auth knows no keyspace, leases, watches or raft (and sees messages only: see
    // `MESSAGES_ONLY`).
    ("ferrocd-auth", &["rocksdb", "ferrocd-mvcc", "ferrocd-watch", "ferrocd-lease", "ferrocd-raft"]),
    // Reusable for any state machine: nothing of etcd, and no RocksDB of its own.
    ("ferrocd-raft", &["ferrocd-proto", "ferrocd-types", "ferrocd-mvcc", "ferrocd-server", "rocksdb"]),
    // TLS knows nothing of etcd's data or of tonic: the client crate and raft reuse it.
    ("ferrocd-tls", &["ferrocd-proto", "ferrocd-engine", "ferrocd-raft", "ferrocd-server", "rocksdb", "tonic"]),
    // bbolt's file format alone: nothing of etcd or of ferrocd, reusable anywhere.
    (
        "ferrocd-bbolt",
        &["ferrocd-proto", "ferrocd-types", "ferrocd-engine", "ferrocd-mvcc", "ferrocd-server", "rocksdb", "tokio"],
    ),
    // The SDK: `cargo add ferrocd-client` pulls no RocksDB, no storage and no server crate.
    ("ferrocd-client", SERVER_SIDE),
    // The CLI is a client like any other: what the SDK may not pull, neither may it.
    ("ferrocdctl", SERVER_SIDE),
    // etcd's schema over any engine: no RocksDB, no Raft, no server (and, as a messages-only
    // crate below, no RPC).
    ("ferrocd-backup", &["rocksdb", "ferrocd-engine-rocks", "ferrocd-raft", "ferrocd-server"]),
];

/// Crates that must see only prost messages: their dependency on `ferrocd-proto` enables no
/// feature (the `client` / `server` features bring tonic).
const MESSAGES_ONLY: &[&str] =
    &["ferrocd-types", "ferrocd-engine", "ferrocd-mvcc", "ferrocd-watch", "ferrocd-auth", "ferrocd-backup"];

/// Crates allowed to depend on `ferrocd-engine-rocks` (the composition roots).
const MAY_USE_ROCKS: &[&str] = &["ferrocd-server", "ferrocd-test-utils", "ferrocd-tests"];

pub(crate) fn check() -> Result {
    let mut problems = Vec::new();
    let root = workspace_root();
    for dir in ["crates", "xtask", "tests"] {
        walk(&root.join(dir), &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") && !path.components().any(|c| c.as_os_str() == "gen") {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if !text.starts_with("//!") {
                    problems.push(format!("{}: does not start with a `//!` doc comment", rel(&root, path)));
                }
            }
            if path.file_name().is_some_and(|n| n == "Cargo.toml") {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if text.contains("[package]")
                    && !text.contains("[lints]\nworkspace = true")
                    && !path.starts_with(root.join("xtask"))
                {
                    problems.push(format!("{}: lacks `[lints] workspace = true`", rel(&root, path)));
                }
            }
        });
    }
    problems.extend(error_table(&root));
    problems.extend(seams(&root));
    problems.extend(layering()?);
    if problems.is_empty() { Ok(()) } else { Err(format!("tidy:\n  {}", problems.join("\n  "))) }
}

/// The server's seams (tests aside): the services reach Raft and the state machine only through
/// the replica facade, and only the appliers (and the member's identity records in
/// `storage.rs`) write engine batches.
fn seams(root: &Path) -> Vec<String> {
    const SERVER: &str = "crates/ferrocd-server/src";
    /// Words forbidden in the files a predicate picks, and why.
    type Rule<'a> = (&'a [&'a str], &'a dyn Fn(&Path) -> bool, &'a str);
    let rules: &[Rule<'_>] = &[
        (
            &["RaftNode", "Applier", "ferrocd_raft"],
            &|p: &Path| p.components().any(|c| c.as_os_str() == "services"),
            "a service names the Raft node or the applier (use the replica facade)",
        ),
        (
            &["WriteBatch"],
            &|p: &Path| !p.components().any(|c| c.as_os_str() == "apply") && !p.ends_with("storage.rs"),
            "an engine batch written outside the appliers",
        ),
    ];
    let mut problems = Vec::new();
    walk(&root.join(SERVER), &mut |path| {
        if path.extension().is_none_or(|e| e != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (words, applies, why) in rules {
            if !applies(path) {
                continue;
            }
            for (i, line) in code.lines().enumerate() {
                if let Some(word) = words.iter().find(|w| line.contains(**w)) {
                    problems.push(format!("{}:{}: {why} ({word}): {}", rel(root, path), i + 1, line.trim()));
                }
            }
        }
    });
    problems
}

/// The server writes etcd's error texts and builds gRPC statuses in one module,
/// `error.rs`: elsewhere (tests aside) a status comes from a `ServerError`.
fn error_table(root: &Path) -> Vec<String> {
    const SERVER: &str = "crates/ferrocd-server/src";
    const BUILDERS: &[&str] = &[
        "Status::new(",
        "Status::unknown(",
        "Status::unavailable(",
        "Status::invalid_argument(",
        "Status::failed_precondition(",
        "Status::internal(",
        "Status::not_found(",
        "Status::unimplemented(",
        "Status::out_of_range(",
        "Status::resource_exhausted(",
        "Status::permission_denied(",
        "Status::already_exists(",
        "Status::cancelled(",
        "Status::aborted(",
        "Status::deadline_exceeded(",
        "Status::unauthenticated(",
    ];
    let mut problems = Vec::new();
    walk(&root.join(SERVER), &mut |path| {
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("error.rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            if line.contains("\"etcdserver: ") || BUILDERS.iter().any(|b| line.contains(b)) {
                problems.push(format!(
                    "{}:{}: an etcd error text or a gRPC status built outside error.rs: {}",
                    rel(root, path),
                    i + 1,
                    line.trim()
                ));
            }
        }
    });
    problems
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                walk(&path, f);
            }
        } else {
            f(&path);
        }
    }
}

/// Normal (non-dev, non-build) dependency edges between packages, by name.
fn graph(messages_only_violations: &mut Vec<String>) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    for package in meta["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        if !MESSAGES_ONLY.contains(&name) {
            continue;
        }
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let normal = dep["kind"].is_null();
            let features = dep["features"].as_array().map_or(0, Vec::len);
            if normal && dep["name"] == "ferrocd-proto" && features > 0 {
                messages_only_violations
                    .push(format!("{name} enables features of ferrocd-proto (tonic stubs); it may use messages only"));
            }
        }
    }
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let Some(name) = node["id"].as_str().and_then(|id| names.get(id)) else { continue };
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()))
            .filter_map(|d| d["pkg"].as_str().and_then(|id| names.get(id)).map(|n| n.to_string()))
            .collect();
        graph.entry(name.to_string()).or_insert_with(BTreeSet::new).extend(deps);
    }
    Ok(graph)
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(n) = stack.pop() {
        for d in graph.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

fn layering() -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let graph = graph(&mut problems)?;
    for (krate, banned) in FORBIDDEN {
        if !graph.contains_key(*krate) {
            continue;
        }
        let deps = reachable(&graph, krate);
        for b in *banned {
            if deps.contains(*b) {
                problems.push(format!("{krate} must not depend on {b}"));
            }
        }
    }
    for (krate, deps) in &graph {
        if krate != "ferrocd-engine-rocks" && deps.contains("rocksdb") {
            problems.push(format!("{krate} depends on rocksdb directly; only ferrocd-engine-rocks may"));
        }
        if deps.contains("ferrocd-engine-rocks") && !MAY_USE_ROCKS.contains(&krate.as_str()) {
            problems.push(format!("{krate} depends on ferrocd-engine-rocks; only {MAY_USE_ROCKS:?} may"));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        if let Err(e) = super::check() {
            panic!("{e}");
        }
    }
}

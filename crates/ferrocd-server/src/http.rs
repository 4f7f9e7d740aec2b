//! The plain HTTP endpoints served on the client port beside gRPC (etcd's `etcdhttp`): `/health`,
//! `/livez` and `/readyz` (with their per-check paths), `/version` and `/metrics` (also on
//! `--listen-metrics-urls`). Bodies, status codes and
//! headers are etcd 3.6's, Go's `http.Error` layout included. Anything else that is not gRPC
//! answers Go's 404; a gRPC request for an unknown service answers `Unimplemented`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::routing::any;
use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::{AlarmType, RangeRequest};

use crate::config::{ETCD_VERSION, STORAGE_VERSION};
use crate::error::ServerError;
use crate::replica::Role;
use crate::services::Shared;

/// The query of a request, as repeated pairs (`?exclude=a&exclude=b&verbose`).
type Pairs = Query<Vec<(String, String)>>;

/// The routes, to merge into the client port's gRPC router.
pub fn routes<E: Engine>(shared: Arc<Shared<E>>) -> Router {
    Router::new()
        .route("/health", any(health::<E>))
        .route("/livez", any(livez::<E>))
        .route("/livez/{check}", any(livez_check::<E>))
        .route("/readyz", any(readyz::<E>))
        .route("/readyz/{check}", any(readyz_check::<E>))
        .route("/version", any(version))
        .route("/metrics", any(metrics::<E>))
        .with_state(shared)
}

/// What answers a request no route took: gRPC's `Unimplemented` to gRPC, Go's 404 to the rest.
pub async fn fallback(request: Request<Body>) -> Response<Body> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = crate::error::unknown_service(request.uri().path()).into_http::<()>().into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    text_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// Go's `http.Error`: the text and a newline, as plain text not to be sniffed.
fn text_error(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// etcd's answer to any method but GET.
fn only_get(method: &Method) -> Option<Response<Body>> {
    (method != Method::GET).then(|| {
        let mut response = text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        response
    })
}

/// `text` as a JSON string.
fn json(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn values<'a>(query: &'a Pairs, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query.0.iter().filter(move |(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
}

/// etcd's probe read: a keys-only Range of one key, as root, linearizable unless `serializable`.
async fn read<E: Engine>(shared: &Shared<E>, serializable: bool) -> Result<(), ServerError> {
    // etcd reads key "" without the API's validation; one key, "\0", is the same work here.
    let req = RangeRequest { key: vec![0], keys_only: true, limit: 1, serializable, ..Default::default() };
    let work = async {
        if !serializable {
            shared.read_barrier().await?;
        }
        shared.kv.range(&req).map(drop).map_err(ServerError::from)
    };
    match tokio::time::timeout(shared.request_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ServerError::Timeout),
    }
}

/// `/health`: `{"health":"true","reason":""}`, or 503 with the first reason it is not
/// (`?exclude=NOSPACE` ignores that alarm; `?serializable=true` checks this member alone).
async fn health<E: Engine>(State(shared): State<Arc<Shared<E>>>, method: Method, query: Pairs) -> Response<Body> {
    if let Some(refused) = only_get(&method) {
        return refused;
    }
    let serializable = query.0.iter().rev().find(|(k, _)| k == "serializable").is_some_and(|(_, v)| v == "true");
    let excluded: Vec<&str> = values(&query, "exclude").collect();
    let alarm = shared
        .replica
        .alarms()
        .list(AlarmType::None)
        .into_iter()
        .map(|a| AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name()))
        .find(|name| !excluded.contains(name));
    let reason = if let Some(name) = alarm {
        Some(format!("ALARM {name}"))
    } else if !serializable && shared.replica.leader().is_none() {
        Some("RAFT NO LEADER".to_string())
    } else {
        read(&shared, serializable).await.err().map(|e| format!("RANGE ERROR:{e}"))
    };
    let healthy = if reason.is_none() { "true" } else { "false" };
    let body = format!(r#"{{"health":"{healthy}","reason":{}}}"#, json(reason.as_deref().unwrap_or_default()));
    match reason {
        Some(reason) => {
            shared.metrics.health_failures.inc();
            tracing::warn!(%reason, "serving /health false");
            text_error(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
        None => {
            shared.metrics.health_success.inc();
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            response
        }
    }
}

/// The checks of `/livez` and `/readyz`, in the order they are reported.
const LIVEZ: [&str; 1] = ["serializable_read"];
const READYZ: [&str; 4] = ["data_corruption", "serializable_read", "linearizable_read", "non_learner"];

/// Runs one named check.
async fn check<E: Engine>(shared: &Shared<E>, name: &str) -> Result<(), String> {
    match name {
        "data_corruption" if shared.replica.alarms().active(AlarmType::Corrupt) => {
            Err("alarm activated: CORRUPT".into())
        }
        "serializable_read" => read(shared, true).await.map_err(|e| e.to_string()),
        "linearizable_read" => read(shared, false).await.map_err(|e| e.to_string()),
        "non_learner" if shared.replica.role() == Role::Learner => Err("not supported for learner".into()),
        _ => Ok(()),
    }
}

/// Runs `checks` and answers as etcd's check registry does: `ok` (the lines too with
/// `?verbose`), or 503 with every line.
async fn run_checks<E: Engine>(shared: &Shared<E>, checks: &[&str], method: &Method, query: &Pairs) -> Response<Body> {
    if let Some(refused) = only_get(method) {
        return refused;
    }
    let mut lines = String::new();
    let mut failed = false;
    for name in checks {
        match check(shared, name).await {
            Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                failed = true;
                lines.push_str(&format!("[-]{name} failed: {e}\n"));
            }
        }
    }
    if failed {
        tracing::error!(reason = %lines, "health check error");
        return text_error(StatusCode::SERVICE_UNAVAILABLE, &lines);
    }
    let verbose = query.0.iter().any(|(k, _)| k == "verbose");
    let mut response = Response::new(Body::from(if verbose { format!("{lines}ok\n") } else { "ok\n".to_string() }));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The registry's checks less the excluded ones (excluding an unknown check is not an error).
fn chosen<'a>(all: &[&'a str], query: &Pairs) -> Vec<&'a str> {
    let excluded: Vec<&str> = values(query, "exclude").collect();
    all.iter().copied().filter(|c| !excluded.contains(c)).collect()
}

async fn livez<E: Engine>(State(shared): State<Arc<Shared<E>>>, method: Method, query: Pairs) -> Response<Body> {
    run_checks(&shared, &chosen(&LIVEZ, &query), &method, &query).await
}

async fn readyz<E: Engine>(State(shared): State<Arc<Shared<E>>>, method: Method, query: Pairs) -> Response<Body> {
    run_checks(&shared, &chosen(&READYZ, &query), &method, &query).await
}

async fn one<E: Engine>(
    shared: &Shared<E>,
    all: &[&str],
    name: &str,
    method: &Method,
    query: &Pairs,
) -> Response<Body> {
    match all.iter().find(|c| **c == name) {
        Some(check) => run_checks(shared, &[check], method, query).await,
        None => text_error(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn livez_check<E: Engine>(
    State(shared): State<Arc<Shared<E>>>,
    Path(name): Path<String>,
    method: Method,
    query: Pairs,
) -> Response<Body> {
    one(&shared, &LIVEZ, &name, &method, &query).await
}

async fn readyz_check<E: Engine>(
    State(shared): State<Arc<Shared<E>>>,
    Path(name): Path<String>,
    method: Method,
    query: Pairs,
) -> Response<Body> {
    one(&shared, &READYZ, &name, &method, &query).await
}

/// `/version`: the server's, the cluster's and the storage's versions.
async fn version(method: Method) -> Response<Body> {
    if let Some(refused) = only_get(&method) {
        return refused;
    }
    let cluster = ETCD_VERSION.rsplit_once('.').map_or(ETCD_VERSION.to_string(), |(minor, _)| format!("{minor}.0"));
    // Go's field order, not a map's.
    let body = format!(
        r#"{{"etcdserver":{},"etcdcluster":{},"storage":{}}}"#,
        json(ETCD_VERSION),
        json(&cluster),
        json(STORAGE_VERSION)
    );
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `/metrics`: the member's metrics in Prometheus' text format, the gauges read now.
async fn metrics<E: Engine>(State(shared): State<Arc<Shared<E>>>, method: Method) -> Response<Body> {
    if let Some(refused) = only_get(&method) {
        return refused;
    }
    let status = shared.replica.status();
    let size = shared.kv.engine().size_bytes();
    let state = crate::metrics::State {
        has_leader: status.leader.is_some(),
        is_leader: status.leader == Some(shared.member_id),
        is_learner: status.members.learners.contains_key(&shared.member_id),
        committed: status.committed,
        applied: status.applied,
        quota_bytes: shared.quota_bytes,
        db_total_bytes: size,
        db_in_use_bytes: size,
        keys: shared.kv.stats().keys as u64,
    };
    let mut response = Response::new(Body::from(shared.metrics.render(&state)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

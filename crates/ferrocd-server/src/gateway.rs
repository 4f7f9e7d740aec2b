//! etcd's HTTP/JSON gateway on the client port: `POST /v3/<service>/<method>` (and `/v3beta/`)
//! with the request as proto3 JSON, answered as etcd's grpc-gateway answers. Each request is a
//! gRPC call to this member's own services over the in-process loopback, so it gets exactly
//! their semantics and errors; the token comes from the `Authorization` header, and a TLS
//! client certificate never names the user here (as in etcd). Streams (`/v3/watch`,
//! `/v3/lease/keepalive`, `/v3/election/observe`, `/v3/maintenance/snapshot`) answer with one
//! JSON object per line, `{"result":…}` or a final `{"error":…}`; a bidirectional one takes
//! the requests of the body (one or more JSON objects) and then ends its sending side.

use std::future::Future;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::v3electionpb::election_client::ElectionClient;
use ferrocd_proto::v3lockpb::lock_client::LockClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::ServerError;
use crate::services::recipes::Loopback;

/// The path prefixes served: etcd rewrites `/v3beta/` to `/v3/`.
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// The HTTP status grpc-gateway answers a gRPC code with.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's error body: `{"code":…,"message":…,"details":[]}`.
fn error_body(status: &Status) -> String {
    let message = serde_json::Value::from(status.message()).to_string();
    format!(r#"{{"code":{},"message":{message},"details":[]}}"#, status.code() as i32)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: &Status) -> Response {
    json_response(http_status(status.code()), error_body(status))
}

/// `message` as a gRPC request carrying the `Authorization` header as the token.
fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| MetadataValue::try_from(v.as_bytes()).ok()) {
        request.metadata_mut().insert("authorization", token);
    }
    request
}

/// The JSON objects of `body` (none when it is empty), as grpc-gateway decodes a request.
fn decode<T: DeserializeOwned + Default>(body: &Bytes) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<T>() {
        out.push(value.map_err(|e| {
            Status::from(ServerError::BadJson(match e.classify() {
                serde_json::error::Category::Eof => "unexpected EOF".to_owned(),
                _ => e.to_string(),
            }))
        })?);
    }
    Ok(out)
}

async fn unary<Req, Resp, F, Fut>(headers: HeaderMap, body: Bytes, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let message = match decode::<Req>(&body) {
        Ok(mut all) => all.drain(..).next().unwrap_or_default(),
        Err(status) => return error_response(&status),
    };
    match call(request(&headers, message)).await {
        // Straight to text: the fields stay in the proto's order.
        Ok(response) => match serde_json::to_string(response.get_ref()) {
            Ok(text) => json_response(StatusCode::OK, text),
            Err(e) => error_response(&ServerError::Encoding(e.to_string()).into()),
        },
        Err(status) => error_response(&status),
    }
}

/// A stream of responses as newline-delimited `{"result":…}` objects, a failure as a last
/// `{"error":…}`.
fn streamed<Resp: Serialize + Send + 'static>(
    opened: Result<tonic::Response<tonic::Streaming<Resp>>, Status>,
) -> Response {
    let stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => return error_response(&status),
    };
    let lines = futures::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        let (line, next) = match stream.message().await {
            Ok(Some(message)) => match serde_json::to_string(&message) {
                Ok(text) => (format!(r#"{{"result":{text}}}"#), Some(stream)),
                Err(e) => {
                    (format!(r#"{{"error":{}}}"#, error_body(&ServerError::Encoding(e.to_string()).into())), None)
                }
            },
            Ok(None) => return None,
            Err(status) => (format!(r#"{{"error":{}}}"#, error_body(&status)), None),
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(format!("{line}\n"))), next))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(lines)).into_response()
}

/// The gateway's routes, calling the services over `loopback`.
pub fn routes(loopback: &Loopback) -> Router {
    let mut router = Router::new();
    macro_rules! unary {
        ($($path:literal => $client:ident . $method:ident),* $(,)?) => {$(
            let lb = loopback.clone();
            let handler = move |headers: HeaderMap, body: Bytes| {
                let lb = lb.clone();
                unary(headers, body, move |request| async move {
                    $client::new(lb.channel()?).max_decoding_message_size(usize::MAX).$method(request).await
                })
            };
            for prefix in PREFIXES {
                router = router.route(&format!("{prefix}{}", $path), post(handler.clone()));
            }
        )*};
    }
    // Streams: every request of the body is sent, then the sending side ends.
    macro_rules! streaming {
        ($($path:literal => $client:ident . $method:ident ($($bidi:tt)?)),* $(,)?) => {$(
            let lb = loopback.clone();
            let handler = move |headers: HeaderMap, body: Bytes| {
                let lb = lb.clone();
                async move {
                    let requests = match decode(&body) {
                        Ok(requests) => requests,
                        Err(status) => return error_response(&status),
                    };
                    let mut client = match lb.channel() {
                        Ok(channel) => $client::new(channel).max_decoding_message_size(usize::MAX),
                        Err(status) => return error_response(&status),
                    };
                    streamed(client.$method(streaming!(@request headers, requests $($bidi)?)).await)
                }
            };
            for prefix in PREFIXES {
                router = router.route(&format!("{prefix}{}", $path), post(handler.clone()));
            }
        )*};
        (@request $headers:ident, $requests:ident bidi) => {
            request(&$headers, futures::stream::iter($requests))
        };
        (@request $headers:ident, $requests:ident) => {
            request(&$headers, $requests.into_iter().next().unwrap_or_default())
        };
    }
    unary! {
        "/kv/range" => KvClient.range,
        "/kv/put" => KvClient.put,
        "/kv/deleterange" => KvClient.delete_range,
        "/kv/txn" => KvClient.txn,
        "/kv/compaction" => KvClient.compact,
        "/lease/grant" => LeaseClient.lease_grant,
        "/lease/revoke" => LeaseClient.lease_revoke,
        "/kv/lease/revoke" => LeaseClient.lease_revoke,
        "/lease/timetolive" => LeaseClient.lease_time_to_live,
        "/kv/lease/timetolive" => LeaseClient.lease_time_to_live,
        "/lease/leases" => LeaseClient.lease_leases,
        "/kv/lease/leases" => LeaseClient.lease_leases,
        "/cluster/member/add" => ClusterClient.member_add,
        "/cluster/member/remove" => ClusterClient.member_remove,
        "/cluster/member/update" => ClusterClient.member_update,
        "/cluster/member/list" => ClusterClient.member_list,
        "/cluster/member/promote" => ClusterClient.member_promote,
        "/maintenance/alarm" => MaintenanceClient.alarm,
        "/maintenance/status" => MaintenanceClient.status,
        "/maintenance/defragment" => MaintenanceClient.defragment,
        "/maintenance/hash" => MaintenanceClient.hash,
        "/maintenance/hashkv" => MaintenanceClient.hash_kv,
        "/maintenance/transfer-leadership" => MaintenanceClient.move_leader,
        "/maintenance/downgrade" => MaintenanceClient.downgrade,
        "/auth/enable" => AuthClient.auth_enable,
        "/auth/disable" => AuthClient.auth_disable,
        "/auth/status" => AuthClient.auth_status,
        "/auth/authenticate" => AuthClient.authenticate,
        "/auth/user/add" => AuthClient.user_add,
        "/auth/user/get" => AuthClient.user_get,
        "/auth/user/list" => AuthClient.user_list,
        "/auth/user/delete" => AuthClient.user_delete,
        "/auth/user/changepw" => AuthClient.user_change_password,
        "/auth/user/grant" => AuthClient.user_grant_role,
        "/auth/user/revoke" => AuthClient.user_revoke_role,
        "/auth/role/add" => AuthClient.role_add,
        "/auth/role/get" => AuthClient.role_get,
        "/auth/role/list" => AuthClient.role_list,
        "/auth/role/delete" => AuthClient.role_delete,
        "/auth/role/grant" => AuthClient.role_grant_permission,
        "/auth/role/revoke" => AuthClient.role_revoke_permission,
        "/lock/lock" => LockClient.lock,
        "/lock/unlock" => LockClient.unlock,
        "/election/campaign" => ElectionClient.campaign,
        "/election/proclaim" => ElectionClient.proclaim,
        "/election/leader" => ElectionClient.leader,
        "/election/resign" => ElectionClient.resign,
    }
    streaming! {
        "/watch" => WatchClient.watch(bidi),
        "/lease/keepalive" => LeaseClient.lease_keep_alive(bidi),
        "/election/observe" => ElectionClient.observe(),
        "/maintenance/snapshot" => MaintenanceClient.snapshot(),
    }
    router
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader};
    use ferrocd_proto::mvccpb::KeyValue;

    use super::*;

    #[test]
    fn json_is_etcds_gateway_mapping() {
        let response = RangeResponse {
            header: Some(ResponseHeader { cluster_id: u64::MAX, member_id: 1, revision: 2, raft_term: 0 }),
            kvs: vec![KeyValue { key: b"foo".to_vec(), value: b"bar".to_vec(), version: 1, ..KeyValue::default() }],
            count: 1,
            more: false,
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"header":{"cluster_id":"18446744073709551615","member_id":"1","revision":"2"},"kvs":[{"key":"Zm9v","version":"1","value":"YmFy"}],"count":"1"}"#
        );
        // Proto names or lowerCamel, numbers as strings or not, unknown fields ignored.
        let put: Vec<PutRequest> = decode(&Bytes::from_static(
            br#"{"key":"Zm9v","value":"YmFy","lease":"7","prevKv":true,"bogus":1} {"key":"YQ==","lease":8}"#,
        ))
        .unwrap();
        assert_eq!(
            put[0],
            PutRequest {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                lease: 7,
                prev_kv: true,
                ..PutRequest::default()
            }
        );
        assert_eq!(put[1].lease, 8);
        assert!(decode::<PutRequest>(&Bytes::new()).unwrap().is_empty());
        let bad = decode::<PutRequest>(&Bytes::from_static(b"{\"key\":")).unwrap_err();
        assert_eq!((bad.code(), bad.message()), (Code::InvalidArgument, "unexpected EOF"));
    }

    #[test]
    fn errors_are_grpc_gateways() {
        let status = Status::permission_denied("etcdserver: permission denied");
        assert_eq!(http_status(status.code()), StatusCode::FORBIDDEN);
        assert_eq!(error_body(&status), r#"{"code":7,"message":"etcdserver: permission denied","details":[]}"#);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}

//! Auth under faults. In a run with auth on, every request carries a user's token: the
//! orchestrator's as root, the traffic's as `app` (READWRITE on the traffic's keys), renewed
//! as etcd's clients renew theirs (on `invalid auth token`, `revision of auth store is old`).
//! Each history adds a guard: one task takes a permission away from `app` and gives it back
//! again and again (through any member, during the fault), while others write and read a
//! guarded key. The check: nothing sent after a revoke returned and before the next grant was
//! sent takes effect or reads (whatever member it went to, however stale, however late it was
//! applied), and nothing sent once a grant returned is refused for want of it.

use std::sync::Arc;
use std::time::Duration;

use ferrocd_proto::authpb::{Permission, permission::Type as PermType};
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest,
    AuthUserAddRequest, AuthUserGrantRoleRequest, AuthenticateRequest, PutRequest, RangeRequest,
};
use ferrocd_proto::mvccpb::Event;
use parking_lot::{Mutex, RwLock};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::check::Findings;
use crate::workload::{Traffic, prefix_end};

/// How long any one auth request may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The role of the guarded permission, granted to `app`.
const GUARD_ROLE: &str = "guard";

/// The users of an auth run: name and password.
pub const ROOT: (&str, &str) = ("root", "root");
pub const APP: (&str, &str) = ("app", "app");

/// The token kinds a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Simple,
    Jwt,
}

impl Tokens {
    /// The server flags of this kind (bcrypt kept cheap: the suite logs in often).
    pub fn flags(self) -> Vec<String> {
        let mut flags = vec!["--bcrypt-cost".to_string(), "4".to_string()];
        if self == Tokens::Jwt {
            let keys = ferrocd_test_utils::jwt_keys();
            flags.push("--auth-token".into());
            flags.push(format!(
                "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
                keys.join("es256.pub").display(),
                keys.join("es256.key").display()
            ));
        }
        flags
    }
}

/// A channel whose requests carry a session's token.
pub type Authed = InterceptedService<Channel, Session>;

/// A user's session: the token its requests carry (none while logged out, or for an
/// anonymous session), shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct Session {
    login: Option<(String, String)>,
    token: Arc<RwLock<Option<AsciiMetadataValue>>>,
}

impl Session {
    /// No user: requests carry no token (auth is off).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// `user`'s session; [`Session::login`] gets its token.
    pub fn user((name, password): (&str, &str)) -> Self {
        Self { login: Some((name.to_string(), password.to_string())), token: Arc::default() }
    }

    /// Whether it is no user's.
    pub fn is_anonymous(&self) -> bool {
        self.login.is_none()
    }

    /// `channel`, its requests carrying this session's token.
    pub fn on(&self, channel: Channel) -> Authed {
        InterceptedService::new(channel, self.clone())
    }

    /// Authenticates through `channel` (nothing to do for an anonymous session).
    ///
    /// # Errors
    /// The refusal, or a timeout.
    pub async fn login(&self, channel: Channel) -> Result<(), tonic::Status> {
        let Some((name, password)) = &self.login else { return Ok(()) };
        let req = AuthenticateRequest { name: name.clone(), password: password.clone() };
        let answer = tokio::time::timeout(TIMEOUT, AuthClient::new(channel).authenticate(req))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("authenticate timed out"))??;
        let token = answer.into_inner().token.parse().map_err(|_| tonic::Status::internal("a token not ASCII"))?;
        *self.token.write() = Some(token);
        Ok(())
    }

    /// Logs in again through `channel` when `status` says the token is no good any more (as
    /// etcd's clients do); answers whether it did.
    pub async fn renew(&self, status: &tonic::Status, channel: Channel) -> bool {
        if self.login.is_none() || !stale(status.message()) {
            return false;
        }
        self.login(channel).await.is_ok()
    }
}

impl tonic::service::Interceptor for Session {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.token.read().clone() {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

/// Whether an error's `message` asks the client to log in again.
pub fn stale(message: &str) -> bool {
    ["invalid auth token", "revision of auth store is old", "user name is empty"].iter().any(|m| message.contains(m))
}

fn grant(role: &str, key: &[u8], range_end: &[u8]) -> AuthRoleGrantPermissionRequest {
    AuthRoleGrantPermissionRequest {
        name: role.to_string(),
        perm: Some(Permission {
            perm_type: PermType::Readwrite as i32,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }),
    }
}

/// Turns auth on through `channel`: root (with the root role), `app` with READWRITE on the
/// traffic's keys (`kv…` and `lock…`) and the guard role (no permission yet).
///
/// # Errors
/// A refused request.
pub async fn enable(channel: Channel) -> anyhow::Result<()> {
    let mut auth = AuthClient::new(channel);
    let user = |(name, password): (&str, &str)| AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    };
    let role = |name: &str| AuthRoleAddRequest { name: name.into() };
    let member = |user: &str, role: &str| AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
    auth.user_add(user(ROOT)).await?;
    auth.role_add(role("root")).await?;
    auth.user_grant_role(member("root", "root")).await?;
    auth.user_add(user(APP)).await?;
    auth.role_add(role("app")).await?;
    for prefix in [&b"kv"[..], b"lock"] {
        auth.role_grant_permission(grant("app", prefix, &prefix_end(prefix))).await?;
    }
    auth.user_grant_role(member("app", "app")).await?;
    auth.role_add(role(GUARD_ROLE)).await?;
    auth.user_grant_role(member("app", GUARD_ROLE)).await?;
    auth.auth_enable(AuthEnableRequest {}).await?;
    Ok(())
}

/// One grant or revoke of the guarded permission, on the history's clock.
#[derive(Debug, Clone)]
pub struct Flip {
    pub grant: bool,
    pub call: u64,
    /// When it returned successfully; `None`: refused or unknown.
    pub ok_at: Option<u64>,
    /// Whether it surely did not take effect (refused before it was proposed).
    pub refused: bool,
}

/// One request on a guarded key, as `app`.
#[derive(Debug, Clone)]
pub struct GuardOp {
    /// A put of this value; `None`: a linearizable read.
    pub put: Option<Vec<u8>>,
    pub call: u64,
    pub returned: u64,
    /// `Ok`: acknowledged (read served); `Err`: the error's message.
    pub result: Result<(), String>,
}

/// The guard of one history: its key, and what was done to it.
#[derive(Debug)]
pub struct Guard {
    pub prefix: Vec<u8>,
    pub key: Vec<u8>,
    pub flips: Mutex<Vec<Flip>>,
    pub ops: Mutex<Vec<GuardOp>>,
}

impl Guard {
    pub fn new(history: u64) -> Self {
        let prefix = format!("gd{history:05}/").into_bytes();
        Self { key: [&prefix[..], b"k"].concat(), prefix, flips: Mutex::default(), ops: Mutex::default() }
    }
}

/// Grants and revokes the guarded permission in turn (as root, through any member) until the
/// traffic stops; the first flip grants it.
pub async fn flipper(traffic: Arc<Traffic>, guard: Arc<Guard>, root: Session, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut grant_next = true;
    let mut turn = rng.usize(..8);
    while !traffic.stopped() {
        let Some(channel) = traffic.raw_channel(turn) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        turn += 1;
        let mut auth = AuthClient::new(root.on(channel.clone()));
        let call = traffic.recording.lin.now();
        let answer = if grant_next {
            let req = grant(GUARD_ROLE, &guard.prefix, &prefix_end(&guard.prefix));
            tokio::time::timeout(TIMEOUT, auth.role_grant_permission(req)).await.map(|r| r.map(drop))
        } else {
            let req = AuthRoleRevokePermissionRequest {
                role: GUARD_ROLE.into(),
                key: guard.prefix.clone(),
                range_end: prefix_end(&guard.prefix),
            };
            tokio::time::timeout(TIMEOUT, auth.role_revoke_permission(req)).await.map(|r| r.map(drop))
        };
        let returned = traffic.recording.lin.now();
        let (ok_at, refused) = match answer {
            Ok(Ok(())) => (Some(returned), false),
            Ok(Err(status)) => {
                // A token refused at the edge never reached the log.
                let refused = stale(status.message());
                root.renew(&status, channel).await;
                (None, refused)
            }
            Err(_) => (None, false),
        };
        guard.flips.lock().push(Flip { grant: grant_next, call, ok_at, refused });
        if ok_at.is_some() {
            grant_next = !grant_next;
            tokio::time::sleep(Duration::from_millis(rng.u64(200..700))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Puts unique values to the guarded key and reads it (linearizably), as `app`, through any
/// member, until the traffic stops.
pub async fn guarded(traffic: Arc<Traffic>, guard: Arc<Guard>, app: Session, client: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut turn = client as usize;
    let mut seq = 0u64;
    while !traffic.stopped() {
        let Some(channel) = traffic.raw_channel(turn) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut kv = KvClient::new(app.on(channel.clone()));
        seq += 1;
        let put = rng.bool().then(|| format!("g{client}-{seq}").into_bytes());
        let call = traffic.recording.lin.now();
        let answer = match &put {
            Some(value) => {
                let req = PutRequest { key: guard.key.clone(), value: value.clone(), ..Default::default() };
                tokio::time::timeout(TIMEOUT, kv.put(req)).await.map(|r| r.map(drop))
            }
            None => {
                let req = RangeRequest { key: guard.key.clone(), ..Default::default() };
                tokio::time::timeout(TIMEOUT, kv.range(req)).await.map(|r| r.map(drop))
            }
        };
        let returned = traffic.recording.lin.now();
        let result = match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                if !app.renew(&status, channel).await {
                    turn += 1;
                }
                Err(status.message().to_string())
            }
            Err(_) => {
                turn += 1;
                Err("the client gave up".to_string())
            }
        };
        guard.ops.lock().push(GuardOp { put, call, returned, result });
        tokio::time::sleep(Duration::from_millis(rng.u64(5..30))).await;
    }
}

/// When the permission surely was in one state: `[from, to)` on the history's clock.
#[derive(Debug, Clone, Copy)]
struct Window {
    granted: bool,
    from: u64,
    to: u64,
}

/// The windows the flips prove: from a flip's success to the call of the next flip that may
/// have taken effect. A flip of unknown outcome may take effect at any later time, so no
/// window is known after it.
fn windows(flips: &[Flip]) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut open: Option<(bool, u64)> = None;
    for flip in flips {
        if flip.refused {
            continue;
        }
        if let Some((granted, from)) = open.take() {
            windows.push(Window { granted, from, to: flip.call });
        }
        match flip.ok_at {
            Some(at) => open = Some((flip.grant, at)),
            None => return windows,
        }
    }
    if let Some((granted, from)) = open {
        windows.push(Window { granted, from, to: u64::MAX });
    }
    windows
}

/// Checks the guard's history against the events of its key every member agrees on.
pub fn check(guard: &Guard, events: &[Event], findings: &mut Findings) {
    let written: std::collections::HashSet<&[u8]> =
        events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.value.as_slice()).collect();
    let windows = windows(&guard.flips.lock());
    for op in guard.ops.lock().iter() {
        let Some(w) = windows.iter().find(|w| w.from <= op.call && op.call < w.to) else { continue };
        let what = if op.put.is_some() { "a put" } else { "a linearizable read" };
        if !w.granted {
            if op.result.is_ok() {
                findings.violation(format!("{what} of a guarded key sent after its permission was revoked succeeded"));
            }
            if let Some(value) = &op.put
                && written.contains(value.as_slice())
            {
                findings.violation(format!(
                    "a put of a guarded key sent after its permission was revoked took effect ({})",
                    String::from_utf8_lossy(value)
                ));
            }
        } else if op.returned < w.to
            && let Err(e) = &op.result
            && e.contains("permission denied")
        {
            findings
                .violation(format!("{what} of a guarded key sent after its permission was granted was refused: {e}"));
        }
    }
}

/// A short account of the guard's history, for the report.
pub fn summary(guard: &Guard) -> String {
    let flips = guard.flips.lock();
    let ops = guard.ops.lock();
    let ok = ops.iter().filter(|o| o.result.is_ok()).count();
    let denied = ops.iter().filter(|o| o.result.as_ref().is_err_and(|e| e.contains("permission denied"))).count();
    format!(
        "{} permission flips ({} ok), {} guarded ops ({ok} ok, {denied} denied)",
        flips.len(),
        flips.iter().filter(|f| f.ok_at.is_some()).count(),
        ops.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flip(grant: bool, call: u64, ok_at: Option<u64>) -> Flip {
        Flip { grant, call, ok_at, refused: false }
    }

    #[test]
    fn windows_run_from_a_success_to_the_next_attempt_and_stop_at_an_unknown() {
        let flips = [
            flip(true, 0, Some(10)),
            flip(false, 20, None),
            Flip { grant: false, call: 25, ok_at: None, refused: true },
            flip(false, 30, Some(40)),
        ];
        let w = windows(&flips);
        assert_eq!(w.len(), 1, "nothing is known after the flip of unknown outcome");
        assert!(w[0].granted && w[0].from == 10 && w[0].to == 20);
        let flips = [flip(true, 0, Some(10)), flip(false, 30, Some(40))];
        let w = windows(&flips);
        assert_eq!((w[1].granted, w[1].from, w[1].to), (false, 40, u64::MAX));
    }

    #[test]
    fn a_success_or_an_effect_in_a_revoked_window_is_a_violation() {
        let guard = Guard::new(1);
        guard.flips.lock().extend([flip(true, 0, Some(10)), flip(false, 20, Some(30))]);
        let op = |put: Option<&str>, call, returned, result: Result<(), &str>| GuardOp {
            put: put.map(|p| p.as_bytes().to_vec()),
            call,
            returned,
            result: result.map_err(str::to_string),
        };
        guard.ops.lock().extend([
            op(Some("a"), 12, 15, Ok(())),
            op(None, 31, 33, Err("etcdserver: permission denied")),
            op(Some("b"), 32, 90, Err("the client gave up")),
        ]);
        let mut findings = Findings::default();
        check(&guard, &[], &mut findings);
        assert!(findings.violations.is_empty(), "{:?}", findings.violations);
        // The late put took effect after all.
        let event = Event {
            kv: Some(ferrocd_proto::mvccpb::KeyValue { value: b"b".to_vec(), ..Default::default() }),
            ..Default::default()
        };
        check(&guard, &[event], &mut findings);
        assert_eq!(findings.violations.len(), 1);
        // A read served while revoked; a put refused while granted.
        guard
            .ops
            .lock()
            .extend([op(None, 35, 36, Ok(())), op(Some("c"), 11, 12, Err("etcdserver: permission denied"))]);
        let mut findings = Findings::default();
        check(&guard, &[], &mut findings);
        assert_eq!(findings.violations.len(), 2, "{:?}", findings.violations);
    }
}

//! The Raft log's entries, generated from `proto/ferrocd/server/v1/entry.proto` (its comments
//! state the compatibility rules), and how requests become them.

#![allow(missing_debug_implementations, clippy::all, reason = "generated code")]

include!("gen/ferrocd.server.v1.rs");

use ferrocd_mvcc::WriteRequest;
use ferrocd_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest};

use ferrocd_auth::AuthInfo;

use crate::auth::Caller;
use crate::context::{Listener, RequestContext};
use crate::replica::LeaseCommand;

/// The format version this member writes, and the newest it applies.
pub const VERSION: u32 = 1;

impl Entry {
    /// `command` as proposed on behalf of the request `ctx` describes.
    pub fn new(command: entry::Command, ctx: &RequestContext) -> Self {
        Self { command: Some(command), version: VERSION, header: Some(header(ctx)) }
    }
}

/// The header of what `ctx`'s request proposes.
fn header(ctx: &RequestContext) -> Header {
    let internal = ctx.listener == Listener::Internal;
    match &ctx.caller {
        Caller::User(info) => Header { username: info.user.clone(), auth_revision: info.revision, internal },
        Caller::Anonymous | Caller::InvalidToken => Header { internal, ..Header::default() },
    }
}

impl Header {
    /// The caller the header names, for the check at apply.
    pub fn caller(&self) -> Option<AuthInfo> {
        (!self.username.is_empty()).then(|| AuthInfo { user: self.username.clone(), revision: self.auth_revision })
    }
}

impl From<WriteRequest> for entry::Command {
    fn from(req: WriteRequest) -> Self {
        match req {
            WriteRequest::Put(r) => Self::Put(r),
            WriteRequest::DeleteRange(r) => Self::DeleteRange(r),
            WriteRequest::Txn(r) => Self::Txn(r),
            WriteRequest::Compact(r) => Self::Compact(r),
            WriteRequest::DeleteKeys(keys) => Self::DeleteKeys(KeyList { keys }),
        }
    }
}

impl From<LeaseCommand> for entry::Command {
    fn from(cmd: LeaseCommand) -> Self {
        match cmd {
            LeaseCommand::Grant { id, ttl } => Self::LeaseGrant(LeaseGrantRequest { id, ttl }),
            LeaseCommand::Revoke(id) => Self::LeaseRevoke(LeaseIds { ids: vec![id], expired: false }),
            LeaseCommand::Expire(ids) => Self::LeaseRevoke(LeaseIds { ids, expired: true }),
            LeaseCommand::Checkpoint(points) => Self::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: points
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::PutRequest;
    use prost::Message;

    use super::*;

    #[test]
    fn an_entry_carries_its_version_and_callers_header() {
        let mut ctx = RequestContext::internal(std::time::Duration::from_secs(1));
        ctx.listener = Listener::Client;
        ctx.caller = Caller::User(AuthInfo { user: "alice".into(), revision: 4 });
        let put = PutRequest { key: b"k".to_vec(), ..Default::default() };
        let entry = Entry::new(WriteRequest::Put(put.clone()).into(), &ctx);
        let decoded = Entry::decode(&*entry.encode_to_vec()).unwrap();
        assert_eq!(decoded.version, VERSION);
        let header = decoded.header.unwrap();
        assert_eq!(header.caller(), Some(AuthInfo { user: "alice".into(), revision: 4 }));
        assert!(!header.internal);
        assert_eq!(decoded.command, Some(entry::Command::Put(put)));
    }
}

//! The alarms' applier: etcd's alarm store. An alarm is a (member, type) pair — NOSPACE when a
//! member's store passed its quota, CORRUPT when the corruption check found members disagree —
//! raised and cleared through the log, so every member knows every alarm. Stored as etcd
//! stores them: bucket `alarm`, the encoded `AlarmMember` as the key, an empty value.
//!
//! While an alarm is active the appliers refuse what etcd's refuse: under NOSPACE a Put, a Txn
//! with a put, and a lease grant (reads, deletes, compaction and revokes go on, so space can be
//! freed); under CORRUPT every keyspace and lease change (reads go on, as in etcd 3.6).

use std::collections::BTreeSet;
use std::io;

use ferrocd_engine::{Bucket, ReadView, Scan};
use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use parking_lot::RwLock;
use prost::Message;

use super::{Outcome, Reply, Step, io_error};
use crate::entry::entry::Command;
use crate::error::ServerError;

/// etcd's alarm bucket.
pub const ALARM_BUCKET: Bucket = Bucket("alarm");

/// An alarm request, as proposed.
pub fn request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
    AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 }
}

/// The active alarms, as applied here.
#[derive(Debug, Default)]
pub struct Alarms(RwLock<BTreeSet<(u64, i32)>>);

impl Alarms {
    /// The alarms `view` records.
    pub(super) fn load(view: &impl ReadView) -> io::Result<Self> {
        let alarms = Self::default();
        alarms.reload(view)?;
        Ok(alarms)
    }

    /// Replaces the alarms with the ones `view` records (after a snapshot install).
    pub(super) fn reload(&self, view: &impl ReadView) -> io::Result<()> {
        let mut set = BTreeSet::new();
        view.scan(ALARM_BUCKET, &[], None, false, &mut |k, _| {
            let m = AlarmMember::decode(k).map_err(|e| ferrocd_engine::Error::Corrupt(format!("alarm record: {e}")))?;
            set.insert((m.member_id, m.alarm));
            Ok(Scan::Continue)
        })
        .map_err(io_error)?;
        *self.0.write() = set;
        Ok(())
    }

    /// The active alarms of type `alarm` (every one for `NONE`), by member.
    pub fn list(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        let wanted = alarm as i32;
        self.0
            .read()
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None || *a == wanted)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// The active alarms as etcd prints them (protobuf's compact text, trailing space included,
    /// zero fields left out): `memberID:<decimal> alarm:NOSPACE `.
    pub fn texts(&self) -> Vec<String> {
        self.list(AlarmType::None)
            .into_iter()
            .map(|m| {
                let mut text = String::new();
                if m.member_id != 0 {
                    text.push_str(&format!("memberID:{} ", m.member_id));
                }
                if m.alarm != 0 {
                    let name = AlarmType::try_from(m.alarm)
                        .map_or_else(|_| m.alarm.to_string(), |a| a.as_str_name().to_string());
                    text.push_str(&format!("alarm:{name} "));
                }
                text
            })
            .collect()
    }

    /// Whether an alarm of type `alarm` is active for any member.
    pub fn active(&self, alarm: AlarmType) -> bool {
        let wanted = alarm as i32;
        self.0.read().iter().any(|(_, a)| *a == wanted)
    }

    /// etcd's refusal of `command` while alarms are active, if it is refused.
    pub(super) fn refusal(&self, command: &Command) -> Option<ServerError> {
        let set = self.0.read();
        if set.is_empty() {
            return None;
        }
        let active = |t: AlarmType| set.iter().any(|(_, a)| *a == t as i32);
        let changes = match command {
            Command::Txn(t) => crate::services::txn_writes(t),
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Compact(_)
            | Command::DeleteKeys(_)
            | Command::LeaseGrant(_)
            | Command::LeaseRevoke(_) => true,
            _ => false,
        };
        if active(AlarmType::Corrupt) && changes {
            return Some(ServerError::Corrupt);
        }
        let adds = match command {
            Command::Put(_) | Command::LeaseGrant(_) => true,
            Command::Txn(t) => crate::services::txn_has_puts(t),
            _ => false,
        };
        (active(AlarmType::Nospace) && adds).then_some(ServerError::NoSpace)
    }
}

/// Applies an alarm request: activate answers the alarm (new or already active; raising `NONE`
/// does nothing), deactivate the alarm if it was active, get every active alarm of the type
/// asked (all for `NONE`), as etcd's alarm store does.
pub(super) fn apply<E: ferrocd_engine::Engine>(
    kv: &ferrocd_mvcc::KvStore<E>,
    alarms: &Alarms,
    req: &AlarmRequest,
    mut step: Step<'_, '_>,
) -> io::Result<Outcome> {
    let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
    let member = AlarmMember { member_id: req.member_id, alarm: req.alarm };
    let key = member.encode_to_vec();
    let changed = match AlarmAction::try_from(req.action) {
        // etcd ignores raising NONE.
        Ok(AlarmAction::Activate) if alarm != AlarmType::None => {
            let new = alarms.0.write().insert((req.member_id, req.alarm));
            if new {
                step.record.put(ALARM_BUCKET, key, Vec::new());
                tracing::warn!(member = %format!("{:x}", req.member_id), alarm = alarm.as_str_name(), "alarm raised");
            }
            // An alarm already active answers as newly raised.
            Some(vec![member])
        }
        Ok(AlarmAction::Deactivate) => {
            let gone = alarms.0.write().remove(&(req.member_id, req.alarm));
            if gone {
                step.record.delete(ALARM_BUCKET, key);
                tracing::warn!(member = %format!("{:x}", req.member_id), alarm = alarm.as_str_name(), "alarm cleared");
            }
            gone.then(|| vec![member])
        }
        Ok(AlarmAction::Get) => Some(alarms.list(alarm)),
        _ => None,
    };
    kv.engine().write(step.record, false).map_err(io_error)?;
    Ok(Outcome::done(Ok(Reply::Alarms(changed.unwrap_or_default()))))
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op};

    use super::super::Reply;
    use super::super::testing::Fixture;
    use super::{AlarmAction, AlarmType, request};
    use crate::entry::entry::Command;
    use crate::error::ServerError;

    fn alarm(f: &mut Fixture, action: AlarmAction, member: u64, t: AlarmType) -> Vec<(u64, i32)> {
        match f.apply(Command::Alarm(request(action, member, t))).unwrap() {
            Reply::Alarms(list) => list.into_iter().map(|m| (m.member_id, m.alarm)).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn put() -> Command {
        Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
    }

    fn txn(with_put: bool) -> Command {
        let op = if with_put {
            request_op::Request::RequestPut(PutRequest { key: b"k".to_vec(), ..Default::default() })
        } else {
            request_op::Request::RequestRange(RangeRequest { key: b"k".to_vec(), ..Default::default() })
        };
        Command::Txn(TxnRequest { success: vec![RequestOp { request: Some(op) }], ..Default::default() })
    }

    #[test]
    fn alarms_are_raised_cleared_and_listed_as_etcd_does_and_survive_a_restart() {
        let mut f = Fixture::new();
        let nospace = AlarmType::Nospace as i32;
        assert_eq!(alarm(&mut f, AlarmAction::Activate, 1, AlarmType::Nospace), [(1, nospace)]);
        assert_eq!(alarm(&mut f, AlarmAction::Activate, 1, AlarmType::Nospace), [(1, nospace)], "already active");
        assert_eq!(alarm(&mut f, AlarmAction::Activate, 2, AlarmType::None), [], "NONE is never raised");
        assert_eq!(alarm(&mut f, AlarmAction::Activate, 2, AlarmType::Corrupt), [(2, AlarmType::Corrupt as i32)]);
        assert_eq!(alarm(&mut f, AlarmAction::Get, 0, AlarmType::Nospace), [(1, nospace)]);
        assert_eq!(alarm(&mut f, AlarmAction::Get, 0, AlarmType::None).len(), 2);
        let reopened = Fixture::on(f.engine.clone());
        assert_eq!(reopened.applier.alarms().list(AlarmType::None).len(), 2);
        assert_eq!(alarm(&mut f, AlarmAction::Deactivate, 2, AlarmType::Corrupt).len(), 1);
        assert_eq!(alarm(&mut f, AlarmAction::Deactivate, 2, AlarmType::Corrupt), [], "not active");
        let reopened = Fixture::on(f.engine.clone());
        assert_eq!(reopened.applier.alarms().list(AlarmType::None).len(), 1);
    }

    #[test]
    fn nospace_refuses_what_adds_data_and_serves_the_rest() {
        let mut f = Fixture::new();
        f.apply(put()).unwrap();
        alarm(&mut f, AlarmAction::Activate, 1, AlarmType::Nospace);
        let grant = Command::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 60 });
        for refused in [put(), txn(true), grant] {
            assert!(matches!(f.apply(refused), Err(ServerError::NoSpace)));
        }
        f.apply(txn(false)).unwrap();
        let delete = ferrocd_proto::etcdserverpb::DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() };
        f.apply(Command::DeleteRange(delete)).unwrap();
        alarm(&mut f, AlarmAction::Deactivate, 1, AlarmType::Nospace);
        f.apply(put()).unwrap();
    }

    #[test]
    fn corrupt_refuses_every_change() {
        let mut f = Fixture::new();
        alarm(&mut f, AlarmAction::Activate, 1, AlarmType::Corrupt);
        assert!(matches!(f.apply(put()), Err(ServerError::Corrupt)));
        assert!(matches!(f.apply(txn(true)), Err(ServerError::Corrupt)));
        f.apply(txn(false)).expect("a read-only Txn is a read");
        // Alarms themselves are still applied (disarm works).
        assert_eq!(alarm(&mut f, AlarmAction::Deactivate, 1, AlarmType::Corrupt).len(), 1);
        f.apply(put()).unwrap();
    }
}

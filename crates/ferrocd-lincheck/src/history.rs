//! Histories: the operations, their outcomes, and a thread-safe recorder.

use std::fmt;
use std::time::Instant;

use parking_lot::Mutex;

/// An operation on one key of the store. Every operation touches exactly one key, which is what
/// lets the checker partition a history per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write `value` to `key`; answers [`Output::Ack`].
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Read `key`; answers [`Output::Read`] with the value seen (`None`: absent).
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// Remove `key` (absent or not); answers [`Output::Ack`].
    Delete {
        /// The key removed.
        key: Vec<u8>,
    },
    /// Compare-and-set: if the value of `key` is `expect` (`None`: absent), make it `new`
    /// (`None`: delete it); answers [`Output::Cas`] with whether it did.
    Cas {
        /// The key compared and set.
        key: Vec<u8>,
        /// The value required for the swap (`None`: the key must be absent).
        expect: Option<Vec<u8>>,
        /// The value installed on success (`None`: the key is deleted).
        new: Option<Vec<u8>>,
    },
}

impl Op {
    /// `Put { key, value }`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put { key: key.into(), value: value.into() }
    }

    /// `Get { key }`.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Op::Get { key: key.into() }
    }

    /// `Delete { key }`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }

    /// `Cas { key, expect, new }`.
    pub fn cas(key: impl Into<Vec<u8>>, expect: Option<Vec<u8>>, new: Option<Vec<u8>>) -> Self {
        Op::Cas { key: key.into(), expect, new }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Whether `output` is the kind of answer this operation gives.
    pub fn accepts(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Op::Put { .. } | Op::Delete { .. }, Output::Ack)
                | (Op::Get { .. }, Output::Read(_))
                | (Op::Cas { .. }, Output::Cas(_))
        )
    }
}

/// The answer of an operation that completed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A `Put` or a `Delete` took effect.
    Ack,
    /// What a `Get` saw (`None`: the key was absent).
    Read(Option<Vec<u8>>),
    /// Whether a `Cas` swapped.
    Cas(bool),
}

/// How an operation ended.
///
/// Record only operations that may have happened. An operation known *not* to have taken effect
/// (rejected before reaching the store, say a validation error or a refused connection) must not be
/// recorded at all — recording it as `Unknown` is also correct, only slower to check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation completed and answered this.
    Ok(Output),
    /// The client does not know (timeout, dropped connection, indeterminate error, crash): the
    /// operation may have taken effect at any time after its call — even after every other
    /// operation returned — or never, and its answer is unconstrained.
    Unknown,
}

/// One operation of a history, with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// Who issued the operation (reporting only; the checker does not need it).
    pub client: u64,
    /// When the operation was invoked, in nanoseconds on a monotonic clock shared by every client.
    pub call: u64,
    /// When it returned, on the same clock; ignored when the outcome is [`Outcome::Unknown`] (the
    /// return is then taken to be infinitely late).
    pub ret: u64,
    /// The operation.
    pub op: Op,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Record {
    /// Panics with a description when the record is ill-formed: an output of the wrong kind for the
    /// operation, or a completed operation returning before its call.
    pub(crate) fn validate(&self, id: OpId) {
        if let Outcome::Ok(output) = &self.outcome {
            assert!(self.op.accepts(output), "{id}: output {output:?} does not answer {:?}", self.op);
            assert!(self.ret >= self.call, "{id}: returns at {} before its call at {}", self.ret, self.call);
        }
    }
}

/// Identifies an operation of a [`History`]: its position in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(crate) usize);

impl OpId {
    /// The position of the operation in its history.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{}", self.0)
    }
}

/// A history of operations, recorded live from many threads or tasks, or built directly.
///
/// Recording: call [`History::invoke`] just *before* sending a request and [`History::complete`]
/// just *after* its answer arrived, so the recorded interval contains the real one. An operation
/// never completed (its client crashed, the test gave up) counts as [`Outcome::Unknown`].
///
/// The checker assumes every key starts absent: use fresh keys, or begin the history with `Put`s
/// that completed before anything else was called.
#[derive(Debug)]
pub struct History {
    start: Instant,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    record: Record,
    completed: bool,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History { start: Instant::now(), slots: Mutex::new(Vec::new()) }
    }

    /// A history made of `records`, in that order ([`OpId`]s are their positions). Their times are
    /// taken as given.
    ///
    /// # Panics
    ///
    /// When a record is ill-formed: a completed operation answering the wrong kind of
    /// [`Output`] or returning before its call.
    pub fn from_records(records: Vec<Record>) -> Self {
        let slots = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                record.validate(OpId(i));
                Slot { record, completed: true }
            })
            .collect();
        History { start: Instant::now(), slots: Mutex::new(slots) }
    }

    /// Nanoseconds since the history was created, on a monotonic clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` invokes `op` now; pass the returned id to [`History::complete`].
    pub fn invoke(&self, client: u64, op: Op) -> OpId {
        let call = self.now();
        let mut slots = self.slots.lock();
        slots.push(Slot {
            record: Record { client, call, ret: u64::MAX, op, outcome: Outcome::Unknown },
            completed: false,
        });
        OpId(slots.len() - 1)
    }

    /// Records that operation `id` returned now with `outcome`.
    ///
    /// # Panics
    ///
    /// When `id` is not an operation of this history, was already completed, or `outcome` answers
    /// another kind of operation.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let ret = self.now();
        let mut slots = self.slots.lock();
        let slot = slots.get_mut(id.0).unwrap_or_else(|| panic!("{id} is not in this history"));
        assert!(!slot.completed, "{id} completed twice");
        let record = match outcome {
            Outcome::Ok(_) => Record { ret, outcome, ..slot.record.clone() },
            Outcome::Unknown => Record { outcome, ..slot.record.clone() },
        };
        record.validate(id);
        *slot = Slot { record, completed: true };
    }

    /// A copy of the records so far, in [`OpId`] order; operations not yet completed are
    /// [`Outcome::Unknown`].
    pub fn records(&self) -> Vec<Record> {
        self.slots.lock().iter().map(|s| s.record.clone()).collect()
    }

    /// The number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether no operation was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! A linearizability checker for histories of concurrent operations on a key-value store with
//! etcd-like semantics, for tests that hammer a (possibly faulty) cluster from many clients.
//!
//! The model is one register per key, holding `Option<Vec<u8>>` and starting absent, with
//! [`Op::Put`], [`Op::Get`], [`Op::Delete`] and compare-and-set [`Op::Cas`]. A [`History`] records
//! each operation's client, call time, return time and [`Outcome`]: its [`Output`], or
//! [`Outcome::Unknown`] when the client cannot tell whether it took effect (timeout, indeterminate
//! error): such an operation may take effect at any time after its call, even after everything
//! else, or never. Operations known not to have happened must not be recorded.
//!
//! [`check`] decides whether some total order of the operations respects real time (an operation
//! returning before another is called comes first) and the register's semantics. Since every
//! operation touches one key, and linearizability is compositional, each key is checked on its own
//! (as the Go tool porcupine does). Per key the search is Wing & Gong's, over candidate
//! linearization points, with Lowe's memoization of (operations linearized, register value); see
//! the `checker` module. [`check_with_limit`] bounds the effort and may answer
//! [`Verdict::Inconclusive`].
//!
//! ```
//! use ferrocd_lincheck::{History, Op, Outcome, Output, check};
//!
//! let history = History::new();
//! let put = history.invoke(1, Op::put("k", "v"));
//! history.complete(put, Outcome::Ok(Output::Ack));
//! let get = history.invoke(2, Op::get("k"));
//! history.complete(get, Outcome::Ok(Output::Read(None))); // stale: the put had returned
//! let violation = check(&history).unwrap_err();
//! assert_eq!(violation.key, b"k");
//! assert_eq!(violation.stuck[0].0, get);
//! ```

mod checker;
mod history;
#[cfg(test)]
mod lincheck_tests;

pub use checker::{Verdict, Violation, check, check_with_limit};
pub use history::{History, Op, OpId, Outcome, Output, Record};

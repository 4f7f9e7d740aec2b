//! etcd's auth and RBAC, sans I/O (as `ferrocd-lease`): the pieces the server's Auth service
//! and every request's permission check are built from.
//!
//! So far: [`RangeSet`], the permission cache's core — a user's READ (or WRITE) key ranges,
//! merged, answering "is `[key, range_end)` fully covered" in one ordered lookup rather than a
//! scan of the user's roles per request.

mod range_set;

pub use range_set::RangeSet;

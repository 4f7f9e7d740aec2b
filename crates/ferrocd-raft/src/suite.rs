//! openraft's own storage test suite, run on the log store (over `MemEngine` and RocksDB-free
//! engines) and the state machine adapter with [`MemKv`](crate::testing::MemKv).

use std::sync::Arc;

use ferrocd_engine::MemEngine;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use crate::log_store::LogStore;
use crate::snapshot::SnapshotStore;
use crate::state_machine::StateMachine;
use crate::testing::MemKv;
use crate::types::TypeConfig;

struct Builder;

fn storage_error(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
}

impl StoreBuilder<TypeConfig, LogStore<MemEngine>, StateMachine<MemKv>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<MemEngine>, StateMachine<MemKv>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let engine = Arc::new(MemEngine::new(crate::BUCKETS));
        let log = LogStore::new(engine).map_err(storage_error)?;
        let snapshots = Arc::new(SnapshotStore::open(&dir.path().join("snap")).map_err(storage_error)?);
        let sm = StateMachine::new(Arc::new(MemKv::default()), Arc::default(), snapshots).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}

//! Snapshots on disk: each is a directory the application filled (e.g. an engine checkpoint),
//! with its Raft metadata in a sibling file; `CURRENT` names the newest, written atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::{SnapshotMeta, decode, encode};

/// A snapshot's data: a directory of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDir {
    pub path: PathBuf,
}

/// The directory holding this member's snapshots.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    root: PathBuf,
    next: AtomicU64,
    /// Held across building a snapshot and adopting it, and across adopting a received one and
    /// installing it, so the two never interleave (a build during an install would capture a
    /// half-installed state).
    pub(crate) exclusive: parking_lot::Mutex<()>,
}

const CURRENT: &str = "CURRENT";

impl SnapshotStore {
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        // Leftovers of builds or transfers a crash interrupted.
        for entry in fs::read_dir(root)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tmp-")) {
                remove(&path)?;
            }
        }
        Ok(Self { root: root.to_path_buf(), next: AtomicU64::new(0), exclusive: parking_lot::Mutex::new(()) })
    }

    /// A fresh, empty directory for a snapshot being built or received.
    pub(crate) fn scratch(&self) -> io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(format!("tmp-{}-{n}", std::process::id()));
        remove(&path)?;
        fs::create_dir_all(&path)?;
        Ok(path)
    }

    /// Makes the snapshot in `dir` (a scratch directory of this store, or any directory, which is
    /// then copied) the current one, and deletes the older ones.
    pub(crate) fn adopt(&self, meta: &SnapshotMeta, dir: &Path) -> io::Result<SnapshotDir> {
        // Already the current snapshot (openraft restores it at startup): nothing to move.
        if let Some((_, current)) = self.current()?
            && current.path == dir
        {
            return Ok(current);
        }
        let index = meta.last_log_id.as_ref().map_or(0, |id| id.index);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("snap-{index:020}-{}-{n}", std::process::id());
        let target = self.root.join(&name);
        if dir.starts_with(&self.root) {
            fs::rename(dir, &target)?;
        } else {
            copy_dir(dir, &target)?;
        }
        let meta_path = self.root.join(format!("{name}.meta"));
        fs::write(&meta_path, encode(meta)?)?;
        fs::File::open(&meta_path)?.sync_all()?;
        sync_dir(&target)?;
        let tmp = self.root.join("tmp-CURRENT");
        fs::write(&tmp, name.as_bytes())?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.root.join(CURRENT))?;
        sync_dir(&self.root)?;
        for entry in fs::read_dir(&self.root)? {
            let path = entry?.path();
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if file.starts_with("snap-") && !file.starts_with(&name) {
                remove(&path)?;
            }
        }
        Ok(SnapshotDir { path: target })
    }

    /// The current snapshot, if one was taken or installed.
    pub(crate) fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotDir)>> {
        let name = match fs::read_to_string(self.root.join(CURRENT)) {
            Ok(name) => name,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = decode(&fs::read(self.root.join(format!("{name}.meta")))?)?;
        Ok(Some((meta, SnapshotDir { path: self.root.join(name) })))
    }
}

fn remove(path: &Path) -> io::Result<()> {
    let result = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Copies a directory tree, fsyncing every file.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            fs::File::open(&target)?.sync_all()?;
        }
    }
    sync_dir(to)
}

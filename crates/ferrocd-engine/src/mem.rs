//! The in-memory reference engine.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{BatchOp, Bucket, Engine, Error, ReadView, Result, Scan, Visitor, WriteBatch};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;
type Trees = HashMap<&'static str, Arc<Tree>>;

/// A `BTreeMap` per bucket, behind a lock.
///
/// Snapshots share the trees (copy on write), so taking one is O(buckets). Nothing is durable:
/// `sync` does nothing, which is right for the tests and tools that use it.
#[derive(Debug)]
pub struct MemEngine {
    trees: RwLock<Trees>,
}

/// A point-in-time view of a [`MemEngine`].
#[derive(Debug, Clone)]
pub struct MemSnapshot {
    trees: Trees,
}

impl MemEngine {
    /// An empty engine with the given buckets.
    pub fn new(buckets: &[Bucket]) -> Self {
        let trees = buckets.iter().map(|b| (b.0, Arc::new(Tree::new()))).collect();
        Self { trees: RwLock::new(trees) }
    }
}

/// The file a checkpoint is written to: per bucket (by name), its name, its entry count (u64)
/// and its entries, every byte string length-prefixed (u32); integers little-endian.
const IMAGE: &str = "MEMENGINE";

fn io(e: std::io::Error) -> Error {
    Error::Backend(e.to_string())
}

fn truncated(e: std::io::Error) -> Error {
    Error::Corrupt(format!("a truncated checkpoint: {e}"))
}

fn write_bytes(out: &mut impl std::io::Write, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::Backend("a key or value over 4 GiB".into()))?;
    out.write_all(&len.to_le_bytes()).map_err(io)?;
    out.write_all(bytes).map_err(io)
}

/// The next byte string; `None` at a clean end of the file when `at_end_ok`.
fn read_bytes(input: &mut impl std::io::Read, at_end_ok: bool) -> Result<Option<Vec<u8>>> {
    let mut len = [0; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if at_end_ok && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(truncated(e)),
    }
    let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes).map_err(truncated)?;
    Ok(Some(bytes))
}

fn tree(trees: &Trees, bucket: Bucket) -> Result<&Arc<Tree>> {
    trees.get(bucket.0).ok_or(Error::UnknownBucket(bucket.0))
}

fn scan_tree(tree: &Tree, start: &[u8], end: Option<&[u8]>, reverse: bool, visit: &mut Visitor<'_>) -> Result<()> {
    if end.is_some_and(|end| end <= start) {
        return Ok(());
    }
    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
    let range = tree.range::<[u8], _>((Bound::Included(start), upper));
    let mut step = |(k, v): (&Vec<u8>, &Vec<u8>)| visit(k, v);
    if reverse {
        for kv in range.rev() {
            if step(kv)? == Scan::Stop {
                break;
            }
        }
    } else {
        for kv in range {
            if step(kv)? == Scan::Stop {
                break;
            }
        }
    }
    Ok(())
}

impl ReadView for MemEngine {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let trees = self.trees.read();
        Ok(tree(&trees, bucket)?.get(key).cloned())
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        // Scan a shared copy so the visitor runs without the lock held.
        let t = Arc::clone(tree(&self.trees.read(), bucket)?);
        scan_tree(&t, start, end, reverse, visit)
    }
}

impl ReadView for MemSnapshot {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(tree(&self.trees, bucket)?.get(key).cloned())
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        scan_tree(tree(&self.trees, bucket)?, start, end, reverse, visit)
    }
}

impl Engine for MemEngine {
    type Snapshot<'a> = MemSnapshot;

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<()> {
        let mut trees = self.trees.write();
        // Validate first so a bad batch changes nothing.
        for op in batch.ops() {
            let (BatchOp::Put { bucket, .. } | BatchOp::Delete { bucket, .. } | BatchOp::DeleteRange { bucket, .. }) =
                op;
            tree(&trees, *bucket)?;
        }
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { bucket, key, value } => {
                    Arc::make_mut(trees.get_mut(bucket.0).expect("validated")).insert(key, value);
                }
                BatchOp::Delete { bucket, key } => {
                    Arc::make_mut(trees.get_mut(bucket.0).expect("validated")).remove(&key);
                }
                BatchOp::DeleteRange { bucket, start, end } => {
                    if start < end {
                        let t = Arc::make_mut(trees.get_mut(bucket.0).expect("validated"));
                        let doomed: Vec<Vec<u8>> = t.range(start..end).map(|(k, _)| k.clone()).collect();
                        for k in doomed {
                            t.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot { trees: self.trees.read().clone() }
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        let trees = self.snapshot().trees;
        std::fs::create_dir(dir).map_err(io)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(IMAGE)).map_err(io)?);
        let mut names: Vec<&&str> = trees.keys().collect();
        names.sort();
        for name in names {
            let tree = &trees[*name];
            write_bytes(&mut out, name.as_bytes())?;
            out.write_all(&(tree.len() as u64).to_le_bytes()).map_err(io)?;
            for (k, v) in tree.iter() {
                write_bytes(&mut out, k)?;
                write_bytes(&mut out, v)?;
            }
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
    }

    fn open_checkpoint(dir: &Path, buckets: &[Bucket]) -> Result<Self> {
        let mut input = std::io::BufReader::new(std::fs::File::open(dir.join(IMAGE)).map_err(io)?);
        let mut found: HashMap<Vec<u8>, Tree> = HashMap::new();
        while let Some(name) = read_bytes(&mut input, true)? {
            let mut count = [0; 8];
            input.read_exact(&mut count).map_err(truncated)?;
            let mut tree = Tree::new();
            for _ in 0..u64::from_le_bytes(count) {
                let key = read_bytes(&mut input, false)?.unwrap_or_default();
                let value = read_bytes(&mut input, false)?.unwrap_or_default();
                tree.insert(key, value);
            }
            found.insert(name, tree);
        }
        let mut trees = Trees::new();
        for bucket in buckets {
            let tree = found
                .remove(bucket.0.as_bytes())
                .ok_or_else(|| Error::Corrupt(format!("no bucket {:?} in the checkpoint", bucket.0)))?;
            trees.insert(bucket.0, Arc::new(tree));
        }
        Ok(Self { trees: RwLock::new(trees) })
    }

    fn size_bytes(&self) -> u64 {
        let trees = self.trees.read();
        let bytes: usize = trees.values().flat_map(|t| t.iter()).map(|(k, v)| k.len() + v.len()).sum();
        bytes as u64
    }

    fn compact_bucket(&self, bucket: Bucket) -> Result<()> {
        tree(&self.trees.read(), bucket).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        crate::testing::run_suite(crate::MemEngine::new);
    }
}

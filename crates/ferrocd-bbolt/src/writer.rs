//! The bulk writer: builds a bbolt file bottom-up from sorted input.
//!
//! Leaves are filled up to the page size and written as soon as the next element would not fit;
//! each written page hands its first key and page id to the level above, whose pending branch
//! page is written the same way when full. So memory holds one pending page per level of the
//! tree being built (plus the root bucket's tree), whatever the number of keys. An element
//! larger than a page gets a page of its own with overflow pages.
//!
//! Layout of the file: pages 0 and 1 (the metas) are reserved and written last, once the root
//! and the high-water mark are known; the buckets' pages follow in the order they were filled,
//! then the root bucket's pages, then an empty freelist page, which is the last page.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::format::{
    BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, ELEMENT_SIZE, FREELIST_PAGE, LEAF_PAGE, MAX_KEY_SIZE,
    MAX_PAGE_ELEMENTS, MAX_PAGE_SIZE, MAX_VALUE_SIZE, MIN_PAGE_SIZE, Meta, PAGE_HEADER_SIZE, PageHeader, show,
};
use crate::{Error, Result};

/// The page size [`Writer::create`] uses (bbolt's default on Linux: the OS page size).
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// Transaction id of the newer meta (page 0); page 1 gets one less, as bbolt's `Tx.WriteTo`
/// does. Even, so that bbolt's next commit (txid + 1, written to page `txid % 2`) replaces the
/// older meta first.
const TXID: u64 = 2;

/// Pages go out through a buffer, numbered from 2 in the order written.
#[derive(Debug)]
struct PageSink {
    out: BufWriter<File>,
    page_size: usize,
    /// Id of the next page to write: the high-water mark so far.
    next: u64,
    /// Reused buffer for encoding one page.
    buf: Vec<u8>,
}

impl PageSink {
    /// Writes `node` as one page (with overflow pages if it is larger than a page), returns its id.
    fn write_node(&mut self, node: &Node, flags: u16) -> Result<u64> {
        let id = self.next;
        node.encode(id, flags, &mut self.buf)?;
        self.pad_and_write(id)
    }

    /// Pads `buf` to whole pages, sets the header's overflow count and writes it.
    fn pad_and_write(&mut self, id: u64) -> Result<u64> {
        let pages = self.buf.len().div_ceil(self.page_size).max(1);
        self.buf.resize(pages * self.page_size, 0);
        let overflow = u32::try_from(pages - 1)
            .map_err(|_| Error::Invalid(format!("page {id} would need {pages} pages, more than bbolt allows")))?;
        self.buf[12..16].copy_from_slice(&overflow.to_le_bytes());
        self.out.write_all(&self.buf)?;
        self.next += pages as u64;
        Ok(id)
    }

    fn write_empty_freelist(&mut self) -> Result<u64> {
        let id = self.next;
        self.buf.clear();
        self.buf.extend_from_slice(&PageHeader { id, flags: FREELIST_PAGE, count: 0, overflow: 0 }.encode());
        self.pad_and_write(id)
    }
}

/// The elements of one pending page: their sizes and flags (or child page ids), and their keys
/// and values back to back.
#[derive(Debug, Default)]
struct Node {
    elements: Vec<Element>,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Element {
    flags: u32,
    ksize: u32,
    vsize: u32,
    pgid: u64,
}

impl Node {
    fn len(&self) -> usize {
        self.elements.len()
    }

    fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Bytes of the page this node makes, before padding.
    fn size(&self) -> usize {
        PAGE_HEADER_SIZE + ELEMENT_SIZE * self.elements.len() + self.data.len()
    }

    fn first_key(&self) -> &[u8] {
        let ksize = self.elements.first().map_or(0, |e| e.ksize as usize);
        &self.data[..ksize]
    }

    /// Adds an element; the caller has checked the key and value lengths.
    fn push(&mut self, flags: u32, key: &[u8], value: &[u8], pgid: u64) {
        // Lengths are bounded by MAX_KEY_SIZE and MAX_VALUE_SIZE, so they fit u32.
        self.elements.push(Element { flags, ksize: key.len() as u32, vsize: value.len() as u32, pgid });
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
    }

    fn clear(&mut self) {
        self.elements.clear();
        self.data.clear();
    }

    /// Encodes the node as a page (header, element table, data; unpadded) into `out`.
    fn encode(&self, id: u64, flags: u16, out: &mut Vec<u8>) -> Result<()> {
        let count = u16::try_from(self.len()).map_err(|_| Error::Invalid("too many elements for one page".into()))?;
        out.clear();
        out.extend_from_slice(&PageHeader { id, flags, count, overflow: 0 }.encode());
        let table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * self.len();
        let mut data_at = table_end;
        for (i, e) in self.elements.iter().enumerate() {
            let elem_at = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
            // `pos` is the distance from the element to its key.
            let pos = u32::try_from(data_at - elem_at)
                .map_err(|_| Error::Invalid(format!("page {id}: element data beyond 4 GiB")))?;
            if flags == LEAF_PAGE {
                out.extend_from_slice(&e.flags.to_le_bytes());
                out.extend_from_slice(&pos.to_le_bytes());
                out.extend_from_slice(&e.ksize.to_le_bytes());
                out.extend_from_slice(&e.vsize.to_le_bytes());
            } else {
                out.extend_from_slice(&pos.to_le_bytes());
                out.extend_from_slice(&e.ksize.to_le_bytes());
                out.extend_from_slice(&e.pgid.to_le_bytes());
            }
            data_at += e.ksize as usize + e.vsize as usize;
        }
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// Where a finished tree's root is.
#[derive(Debug)]
enum Root {
    Page(u64),
    /// An inline leaf page (page header with id 0, elements, data), stored in the parent's value.
    Inline(Vec<u8>),
}

/// One B+tree under construction, bottom-up.
#[derive(Debug)]
struct TreeBuilder {
    page_size: usize,
    /// The pending leaf.
    leaf: Node,
    /// Pending branch pages; `levels[0]` holds the children of the written leaves.
    levels: Vec<Node>,
}

impl TreeBuilder {
    fn new(page_size: usize) -> TreeBuilder {
        TreeBuilder { page_size, leaf: Node::default(), levels: Vec::new() }
    }

    /// Whether a node with `node`'s elements plus one of `extra` data bytes would overflow a page.
    fn full(&self, node: &Node, extra: usize) -> bool {
        node.size() + ELEMENT_SIZE + extra > self.page_size || node.len() >= MAX_PAGE_ELEMENTS
    }

    fn add(&mut self, flags: u32, key: &[u8], value: &[u8], sink: &mut PageSink) -> Result<()> {
        if !self.leaf.is_empty() && self.full(&self.leaf, key.len() + value.len()) {
            self.flush_leaf(sink)?;
        }
        self.leaf.push(flags, key, value, 0);
        Ok(())
    }

    fn flush_leaf(&mut self, sink: &mut PageSink) -> Result<()> {
        let pgid = sink.write_node(&self.leaf, LEAF_PAGE)?;
        let first = self.leaf.first_key().to_vec();
        self.leaf.clear();
        self.add_child(0, &first, pgid, sink)
    }

    /// Records a written page (`key` being its first key) in the branch level `level`.
    fn add_child(&mut self, level: usize, key: &[u8], pgid: u64, sink: &mut PageSink) -> Result<()> {
        if self.levels.len() == level {
            self.levels.push(Node::default());
        }
        // A branch page keeps at least two children even when keys are large (then it
        // overflows), so every level is at most half as wide as the one below.
        let node = &self.levels[level];
        if node.len() >= 2 && self.full(node, key.len()) {
            self.flush_branch(level, sink)?;
        }
        self.levels[level].push(0, key, &[], pgid);
        Ok(())
    }

    fn flush_branch(&mut self, level: usize, sink: &mut PageSink) -> Result<()> {
        let pgid = sink.write_node(&self.levels[level], BRANCH_PAGE)?;
        let first = self.levels[level].first_key().to_vec();
        self.levels[level].clear();
        self.add_child(level + 1, &first, pgid, sink)
    }

    /// Writes what is pending and returns the root. With `inline_ok`, a tree that is a single
    /// leaf no bigger than a quarter page is returned inline, as bbolt stores small buckets.
    fn finish(mut self, inline_ok: bool, sink: &mut PageSink) -> Result<Root> {
        if self.levels.is_empty() {
            if inline_ok && self.leaf.size() <= self.page_size / 4 {
                let mut page = Vec::new();
                self.leaf.encode(0, LEAF_PAGE, &mut page)?;
                return Ok(Root::Inline(page));
            }
            return Ok(Root::Page(sink.write_node(&self.leaf, LEAF_PAGE)?));
        }
        if !self.leaf.is_empty() {
            self.flush_leaf(sink)?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            let node = &self.levels[level];
            if top {
                if node.len() == 1 {
                    return Ok(Root::Page(node.elements[0].pgid));
                }
                return Ok(Root::Page(sink.write_node(node, BRANCH_PAGE)?));
            }
            if !node.is_empty() {
                self.flush_branch(level, sink)?;
            }
            level += 1;
        }
    }
}

/// The bucket being filled.
#[derive(Debug)]
struct OpenBucket {
    name: Vec<u8>,
    tree: TreeBuilder,
    last_key: Option<Vec<u8>>,
}

/// Writes a new bbolt file from top-level buckets and their keys, given in ascending order.
///
/// Call [`bucket`](Writer::bucket) to start each bucket (names strictly ascending), then
/// [`put`](Writer::put) its keys (strictly ascending), and [`finish`](Writer::finish) at the
/// end. Memory stays flat however much is written. Until `finish` returns, the file has no
/// valid meta page, so a writer dropped early leaves a file bbolt (and [`Reader`](crate::Reader))
/// refuses. After an I/O error the writer refuses further calls.
///
/// Small buckets (one leaf of at most a quarter page, empty ones included) are stored inline in
/// the root bucket, as bbolt does; others get their own pages, leaves filled up to the page size.
#[derive(Debug)]
pub struct Writer {
    sink: PageSink,
    /// The root bucket's tree: bucket name → bucket header.
    root: TreeBuilder,
    current: Option<OpenBucket>,
    last_bucket: Option<Vec<u8>>,
    failed: bool,
}

impl Writer {
    /// Creates (or truncates) the file at `path`, with 4096-byte pages.
    pub fn create(path: &Path) -> Result<Writer> {
        Writer::with_page_size(path, DEFAULT_PAGE_SIZE)
    }

    /// Creates (or truncates) the file at `path` with the given page size: a power of two from
    /// [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`]. Readers must use the same page size as the OS
    /// only for bbolt versions before 1.3; later ones take it from the meta page.
    pub fn with_page_size(path: &Path, page_size: u32) -> Result<Writer> {
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(Error::Invalid(format!(
                "page size {page_size} is not a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}"
            )));
        }
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        let page_size = page_size as usize;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The two meta pages are written at the end; reserve them.
        out.write_all(&vec![0u8; 2 * page_size])?;
        Ok(Writer {
            sink: PageSink { out, page_size, next: 2, buf: Vec::with_capacity(page_size) },
            root: TreeBuilder::new(page_size),
            current: None,
            last_bucket: None,
            failed: false,
        })
    }

    fn usable(&self) -> Result<()> {
        if self.failed { Err(Error::Invalid("the writer failed earlier and cannot go on".into())) } else { Ok(()) }
    }

    /// Marks the writer failed if `r` is an error: a page may have been half written.
    fn track<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Ends the current bucket (if any) and starts the top-level bucket `name`, which must be
    /// non-empty and sort strictly after the previous bucket's name.
    pub fn bucket(&mut self, name: &[u8]) -> Result<()> {
        self.usable()?;
        if name.is_empty() {
            return Err(Error::Invalid("bucket name is empty".into()));
        }
        if name.len() > MAX_KEY_SIZE {
            return Err(Error::Invalid(format!("bucket name of {} bytes exceeds {MAX_KEY_SIZE}", name.len())));
        }
        if let Some(last) = &self.last_bucket
            && name <= last.as_slice()
        {
            return Err(Error::Order(format!("bucket {:?} does not sort after bucket {:?}", show(name), show(last))));
        }
        let r = self.end_bucket();
        self.track(r)?;
        self.last_bucket = Some(name.to_vec());
        self.current =
            Some(OpenBucket { name: name.to_vec(), tree: TreeBuilder::new(self.sink.page_size), last_key: None });
        Ok(())
    }

    /// Adds `key` = `value` to the current bucket. The key must be non-empty, at most
    /// [`MAX_KEY_SIZE`] bytes and sort strictly after the bucket's previous key; the value at
    /// most [`MAX_VALUE_SIZE`] bytes.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.usable()?;
        let Some(bucket) = self.current.as_mut() else {
            return Err(Error::Invalid("put before any bucket was started".into()));
        };
        if key.is_empty() {
            return Err(Error::Invalid(format!("empty key in bucket {:?}", show(&bucket.name))));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(Error::Invalid(format!("key of {} bytes exceeds {MAX_KEY_SIZE}", key.len())));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::Invalid(format!("value of {} bytes exceeds {MAX_VALUE_SIZE}", value.len())));
        }
        match &mut bucket.last_key {
            Some(last) if key <= last.as_slice() => {
                return Err(Error::Order(format!(
                    "key {:?} does not sort after key {:?} in bucket {:?}",
                    show(key),
                    show(last),
                    show(&bucket.name)
                )));
            }
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => bucket.last_key = Some(key.to_vec()),
        }
        let r = bucket.tree.add(0, key, value, &mut self.sink);
        self.track(r)
    }

    /// Adds a raw leaf element (flags included) to the current bucket, bypassing the checks;
    /// lets tests build what the public API cannot, such as nested buckets.
    #[cfg(test)]
    pub(crate) fn put_raw(&mut self, flags: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let bucket = self.current.as_mut().ok_or_else(|| Error::Invalid("no bucket".into()))?;
        bucket.tree.add(flags, key, value, &mut self.sink)
    }

    /// Writes the current bucket's remaining pages and its entry in the root bucket.
    fn end_bucket(&mut self) -> Result<()> {
        let Some(bucket) = self.current.take() else { return Ok(()) };
        let mut value = vec![0u8; BUCKET_HEADER_SIZE];
        match bucket.tree.finish(true, &mut self.sink)? {
            Root::Page(pgid) => value[..8].copy_from_slice(&pgid.to_le_bytes()),
            Root::Inline(page) => value.extend_from_slice(&page),
        }
        self.root.add(BUCKET_LEAF_FLAG, &bucket.name, &value, &mut self.sink)
    }

    /// Ends the last bucket, writes the root bucket, an empty freelist page and both meta
    /// pages, and syncs the file. Returns the file's length in bytes (high-water mark × page
    /// size).
    pub fn finish(mut self) -> Result<u64> {
        self.usable()?;
        self.end_bucket()?;
        let root = match self.root.finish(false, &mut self.sink)? {
            Root::Page(pgid) => pgid,
            Root::Inline(_) => return Err(Error::Invalid("root bucket cannot be inline".into())),
        };
        let freelist = self.sink.write_empty_freelist()?;
        let high_water = self.sink.next;
        let file = self.sink.out.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        let page_size = self.sink.page_size as u32;
        let meta = Meta { page_size, flags: 0, root, sequence: 0, freelist, pgid: high_water, txid: TXID };
        file.write_all_at(&meta.page(0), 0)?;
        let older = Meta { txid: TXID - 1, ..meta };
        file.write_all_at(&older.page(1), u64::from(page_size))?;
        file.sync_all()?;
        Ok(high_water * u64::from(page_size))
    }
}

//! The reader: opens a bbolt file by its meta pages and reads pages on demand with positional
//! reads, never the whole file.
//!
//! Lookups descend the trees (one page per level); iteration walks them depth first, keeping
//! one page per level in memory. [`Reader::check`] applies bbolt's `Tx.Check` rules.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::format::{
    BUCKET_LEAF_FLAG, BucketRoot, FREELIST_COUNT_OVERFLOW, FREELIST_PAGE, META_SIZE, Meta, NO_FREELIST,
    PAGE_HEADER_SIZE, PageHeader, PageView, page_type, parse_bucket_value, show, u64_at,
};
use crate::{Error, Result};

/// Deepest nesting of pages (tree levels plus nested buckets) followed before the file is
/// declared corrupt; real trees are a handful of levels deep.
const MAX_DEPTH: usize = 64;

/// Most errors [`Reader::check`] collects before it stops.
const MAX_CHECK_ERRORS: usize = 100;

/// Page sizes probed for the second meta page when the first one is invalid (as bbolt does).
const META1_PROBES: std::ops::RangeInclusive<u32> = 0..=14;

/// Reads a bbolt file: its meta, buckets, keys and values, and checks its consistency.
///
/// The meta chosen is the valid one with the higher transaction id, as bbolt chooses. Pages are
/// read with positional reads as needed, so the file may be of any size.
#[derive(Debug)]
pub struct Reader {
    file: File,
    file_len: u64,
    meta: Meta,
}

/// What [`Reader::stats`] reports about one top-level bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketStats {
    /// The bucket's name.
    pub name: Vec<u8>,
    /// Keys holding values (nested buckets not counted).
    pub keys: u64,
    /// Keys holding nested buckets (whose contents are not counted).
    pub nested_buckets: u64,
    /// Whether the bucket is stored inline in the root bucket.
    pub inline: bool,
    /// Branch pages of the bucket's tree.
    pub branch_pages: u64,
    /// Leaf pages of the bucket's tree (0 when inline).
    pub leaf_pages: u64,
    /// Overflow pages following the branch and leaf pages.
    pub overflow_pages: u64,
    /// Levels of the tree, leaves included (1 for a single leaf or an inline bucket).
    pub depth: u32,
}

/// A page read from the file (or copied from an inline bucket value).
struct OwnedPage {
    /// Where it was read from, for messages: a page id, or none for an inline page.
    id: Option<u64>,
    bytes: Vec<u8>,
}

impl OwnedPage {
    fn what(&self) -> impl Fn() -> String + '_ {
        move || match self.id {
            Some(id) => format!("page {id}"),
            None => "inline page".to_string(),
        }
    }

    fn view(&self) -> Result<PageView<'_>> {
        PageView::new(&self.bytes, &self.what())
    }
}

/// A visitor of leaf elements: flags, key, value.
type ElementFn<'a> = dyn FnMut(u32, &[u8], &[u8]) -> Result<()> + 'a;

/// One step of a descent.
enum Step {
    Done(Option<(u32, Vec<u8>)>),
    Child(u64),
}

/// State of one [`Reader::check`] run.
struct Checker<'r> {
    reader: &'r Reader,
    reachable: Bitset,
    freed: Bitset,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn error(&mut self, e: String) {
        if self.errors.len() < MAX_CHECK_ERRORS {
            self.errors.push(e);
        }
    }

    fn full(&self) -> bool {
        self.errors.len() >= MAX_CHECK_ERRORS
    }
}

/// One bit per page below the high-water mark.
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: u64) -> Bitset {
        Bitset(vec![0; len.div_ceil(64) as usize])
    }

    fn get(&self, i: u64) -> bool {
        self.0.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; returns whether it was set already.
    fn set(&mut self, i: u64) -> bool {
        match self.0.get_mut((i / 64) as usize) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w |= 1 << (i % 64);
                was
            }
            None => false,
        }
    }
}

/// Reads as much of `buf` as the file holds from `offset`; returns the count read.
fn read_upto(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_meta(file: &File, offset: u64) -> Result<std::result::Result<Meta, String>> {
    let mut buf = [0u8; PAGE_HEADER_SIZE + META_SIZE];
    let n = read_upto(file, &mut buf, offset)?;
    if n < buf.len() {
        return Ok(Err("file too short".into()));
    }
    Ok(Meta::decode(&buf[PAGE_HEADER_SIZE..]))
}

impl Reader {
    /// Opens the file at `path`: validates both meta pages (magic, version, checksum) and uses
    /// the valid one with the higher transaction id. Fails if neither is valid.
    pub fn open(path: &Path) -> Result<Reader> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let meta0 = read_meta(&file, 0)?;
        let meta1 = match &meta0 {
            Ok(m) => read_meta(&file, u64::from(m.page_size))?,
            Err(_) => {
                // The page size is unknown: look for the second meta at each plausible size.
                // The reason given is the one at the usual page size.
                let mut found = Err("no valid meta at any page size".to_string());
                for shift in META1_PROBES {
                    let at = 1024u64 << shift;
                    if at >= file_len {
                        break;
                    }
                    match read_meta(&file, at)? {
                        Ok(m) if u64::from(m.page_size) == at => {
                            found = Ok(m);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if at == u64::from(crate::DEFAULT_PAGE_SIZE) => {
                            found = Err(format!("no valid meta at any page size (at offset {at}: {e})"));
                        }
                        Err(_) => {}
                    }
                }
                found
            }
        };
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e0), Err(e1)) => {
                return Err(Error::Corrupt(format!("no valid meta page (meta 0: {e0}; meta 1: {e1})")));
            }
        };
        if (meta.page_size as usize) < PAGE_HEADER_SIZE + META_SIZE {
            return Err(Error::Corrupt(format!("page size {} is too small", meta.page_size)));
        }
        if meta.pgid < 2 || meta.root < 2 || meta.root >= meta.pgid {
            return Err(Error::Corrupt(format!(
                "root bucket page {} outside the pages in use (2..{})",
                meta.root, meta.pgid
            )));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(Error::Corrupt(format!(
                "freelist page {} outside the pages in use (2..{})",
                meta.freelist, meta.pgid
            )));
        }
        Ok(Reader { file, file_len, meta })
    }

    /// The file's page size.
    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// The transaction id of the meta in use.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// The high-water mark: the number of pages in use (every page id is below it).
    pub fn high_water(&self) -> u64 {
        self.meta.pgid
    }

    /// The size of the database in bytes (high-water mark × page size), as bbolt's `Tx.Size`.
    /// The file itself may be longer (preallocated space, or a snapshot's appended hash).
    pub fn size(&self) -> u64 {
        self.meta.pgid.saturating_mul(u64::from(self.meta.page_size))
    }

    /// The page id of the freelist, or `None` when the file has no synced freelist.
    pub fn freelist_page(&self) -> Option<u64> {
        (self.meta.freelist != NO_FREELIST).then_some(self.meta.freelist)
    }

    /// Reads page `id` with its overflow pages.
    fn read_page(&self, id: u64) -> Result<OwnedPage> {
        let ps = u64::from(self.meta.page_size);
        if id >= self.meta.pgid {
            return Err(Error::Corrupt(format!("page {id} is at or beyond the high-water mark {}", self.meta.pgid)));
        }
        let beyond = || Error::Corrupt(format!("page {id} lies beyond the end of the file ({} bytes)", self.file_len));
        let offset = id.checked_mul(ps).ok_or_else(beyond)?;
        if offset.checked_add(ps).is_none_or(|end| end > self.file_len) {
            return Err(beyond());
        }
        let mut bytes = vec![0u8; ps as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        let header = PageHeader::parse(&bytes).ok_or_else(beyond)?;
        if header.id != id {
            return Err(Error::Corrupt(format!("page {id} identifies itself as page {}", header.id)));
        }
        if header.overflow > 0 {
            let pages = u64::from(header.overflow) + 1;
            if id + u64::from(header.overflow) >= self.meta.pgid {
                return Err(Error::Corrupt(format!(
                    "page {id} with {} overflow pages runs beyond the high-water mark {}",
                    header.overflow, self.meta.pgid
                )));
            }
            let len = pages.checked_mul(ps).ok_or_else(beyond)?;
            if offset.checked_add(len).is_none_or(|end| end > self.file_len) {
                return Err(beyond());
            }
            let len = usize::try_from(len).map_err(|_| beyond())?;
            bytes.resize(len, 0);
            self.file.read_exact_at(&mut bytes[ps as usize..], offset + ps)?;
        }
        Ok(OwnedPage { id: Some(id), bytes })
    }

    /// The root page of a bucket tree.
    fn load_root(&self, root: BucketRoot<'_>) -> Result<OwnedPage> {
        match root {
            BucketRoot::Page(id) => self.read_page(id),
            BucketRoot::Inline(bytes) => {
                let page = OwnedPage { id: None, bytes: bytes.to_vec() };
                if !page.view()?.is_leaf() {
                    return Err(Error::Corrupt("inline bucket page is not a leaf".into()));
                }
                Ok(page)
            }
        }
    }

    /// Looks `key` up in the tree rooted at `root`: returns the leaf element's flags and value.
    fn lookup(&self, root: BucketRoot<'_>, key: &[u8]) -> Result<Option<(u32, Vec<u8>)>> {
        let mut page = self.load_root(root)?;
        for _ in 0..MAX_DEPTH {
            match Self::search(&page, key)? {
                Step::Done(found) => return Ok(found),
                Step::Child(id) => page = self.read_page(id)?,
            }
        }
        Err(Error::Corrupt(format!("tree deeper than {MAX_DEPTH} levels")))
    }

    /// Searches one page for `key`: the leaf element found (or not), or the child to descend to.
    fn search(page: &OwnedPage, key: &[u8]) -> Result<Step> {
        let what = page.what();
        let view = page.view()?;
        if view.is_leaf() {
            let (mut lo, mut hi) = (0, view.count());
            while lo < hi {
                let mid = (lo + hi) / 2;
                let e = view.leaf(mid, &what)?;
                match e.key.cmp(key) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return Ok(Step::Done(Some((e.flags, e.value.to_vec())))),
                }
            }
            return Ok(Step::Done(None));
        }
        if !view.is_branch() {
            return Err(Error::Corrupt(format!("{}: {} page in a tree", what(), page_type(view.header.flags))));
        }
        if view.count() == 0 {
            return Ok(Step::Done(None));
        }
        // The child is the last one whose first key is <= key (the first if none is).
        let (mut lo, mut hi) = (0, view.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if view.branch(mid, &what)?.key <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(Step::Child(view.branch(lo.saturating_sub(1), &what)?.pgid))
    }

    /// Calls `f` with every leaf element of the tree under `page`, in order.
    fn walk(&self, page: &OwnedPage, depth: usize, f: &mut ElementFn<'_>) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::Corrupt(format!("tree deeper than {MAX_DEPTH} levels")));
        }
        let what = page.what();
        let view = page.view()?;
        if view.is_leaf() {
            for i in 0..view.count() {
                let e = view.leaf(i, &what)?;
                f(e.flags, e.key, e.value)?;
            }
            Ok(())
        } else if view.is_branch() {
            for i in 0..view.count() {
                let child = self.read_page(view.branch(i, &what)?.pgid)?;
                self.walk(&child, depth + 1, f)?;
            }
            Ok(())
        } else {
            Err(Error::Corrupt(format!("{}: {} page in a tree", what(), page_type(view.header.flags))))
        }
    }

    /// The value of top-level bucket `name` in the root bucket.
    fn bucket_value(&self, name: &[u8]) -> Result<Vec<u8>> {
        match self.lookup(BucketRoot::Page(self.meta.root), name)? {
            None => Err(Error::BucketNotFound(show(name))),
            Some((flags, value)) => {
                if flags & BUCKET_LEAF_FLAG == 0 {
                    return Err(Error::Corrupt(format!("root bucket entry {:?} is not a bucket", show(name))));
                }
                Ok(value)
            }
        }
    }

    fn bucket_root<'v>(name: &[u8], value: &'v [u8]) -> Result<BucketRoot<'v>> {
        parse_bucket_value(value)
            .ok_or_else(|| Error::Corrupt(format!("bucket {:?} has a truncated header", show(name))))
    }

    /// The names of the top-level buckets, in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        let root = self.read_page(self.meta.root)?;
        self.walk(&root, 0, &mut |flags, key, _| {
            if flags & BUCKET_LEAF_FLAG == 0 {
                return Err(Error::Corrupt(format!("root bucket entry {:?} is not a bucket", show(key))));
            }
            names.push(key.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    /// Calls `f` with every key and value of top-level bucket `bucket`, in key order, stopping at
    /// the first error `f` returns. A nested bucket inside is an [`Error::Unsupported`] (this
    /// crate's buckets hold keys only); nothing is skipped silently.
    pub fn for_each(&self, bucket: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let value = self.bucket_value(bucket)?;
        let root = self.load_root(Self::bucket_root(bucket, &value)?)?;
        self.walk(&root, 0, &mut |flags, key, value| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                return Err(Error::Unsupported(format!("nested bucket {:?} in bucket {:?}", show(key), show(bucket))));
            }
            f(key, value)
        })
    }

    /// The value of `key` in top-level bucket `bucket`, found by descending the trees. A nested
    /// bucket at `key` is an [`Error::Unsupported`].
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self.bucket_value(bucket)?;
        match self.lookup(Self::bucket_root(bucket, &value)?, key)? {
            None => Ok(None),
            Some((flags, _)) if flags & BUCKET_LEAF_FLAG != 0 => {
                Err(Error::Unsupported(format!("key {:?} of bucket {:?} is a nested bucket", show(key), show(bucket))))
            }
            Some((_, v)) => Ok(Some(v)),
        }
    }

    /// Counts the keys and pages of every top-level bucket (reads every page of the file).
    pub fn stats(&self) -> Result<Vec<BucketStats>> {
        let mut out = Vec::new();
        for name in self.buckets()? {
            let value = self.bucket_value(&name)?;
            let root = Self::bucket_root(&name, &value)?;
            let mut stats =
                BucketStats { name, inline: matches!(root, BucketRoot::Inline(_)), ..BucketStats::default() };
            let page = self.load_root(root)?;
            self.count_pages(&page, 1, &mut stats)?;
            out.push(stats);
        }
        Ok(out)
    }

    fn count_pages(&self, page: &OwnedPage, depth: u32, stats: &mut BucketStats) -> Result<()> {
        if depth as usize > MAX_DEPTH {
            return Err(Error::Corrupt(format!("tree deeper than {MAX_DEPTH} levels")));
        }
        let what = page.what();
        let view = page.view()?;
        stats.depth = stats.depth.max(depth);
        if page.id.is_some() {
            stats.overflow_pages += u64::from(view.header.overflow);
        }
        if view.is_leaf() {
            if page.id.is_some() {
                stats.leaf_pages += 1;
            }
            for i in 0..view.count() {
                if view.leaf(i, &what)?.is_bucket() {
                    stats.nested_buckets += 1;
                } else {
                    stats.keys += 1;
                }
            }
        } else if view.is_branch() {
            stats.branch_pages += 1;
            for i in 0..view.count() {
                let child = self.read_page(view.branch(i, &what)?.pgid)?;
                self.count_pages(&child, depth + 1, stats)?;
            }
        } else {
            return Err(Error::Corrupt(format!("{}: {} page in a tree", what(), page_type(view.header.flags))));
        }
        Ok(())
    }

    /// Checks the file's consistency by bbolt's `Tx.Check` rules: no page below the high-water
    /// mark is both unreachable and not free (when a freelist was synced; without one, every
    /// unreachable page is free), none is referenced twice, none is both reachable and free,
    /// none is freed twice, reachable pages are branch or leaf pages, and keys are in strictly
    /// ascending order within pages and between branch keys. Nested buckets are checked too.
    /// Returns [`Error::Check`] listing what it found (up to 100 findings).
    pub fn check(&self) -> Result<()> {
        let hwm = self.meta.pgid;
        let needed = hwm.checked_mul(u64::from(self.meta.page_size));
        if needed.is_none_or(|n| n > self.file_len) {
            return Err(Error::Check(vec![format!(
                "file of {} bytes is shorter than its {hwm} pages of {} bytes",
                self.file_len, self.meta.page_size
            )]));
        }
        let mut ck = Checker { reader: self, reachable: Bitset::new(hwm), freed: Bitset::new(hwm), errors: Vec::new() };
        ck.reachable.set(0);
        ck.reachable.set(1);
        if self.meta.freelist != NO_FREELIST {
            match self.freelist_ids() {
                Ok((overflow, ids)) => {
                    for id in ids {
                        if id < hwm && ck.freed.set(id) {
                            ck.error(format!("page {id}: already freed"));
                        }
                    }
                    for i in 0..=u64::from(overflow) {
                        ck.reachable.set(self.meta.freelist + i);
                    }
                }
                Err(e) => ck.error(format!("freelist page {}: {e}", self.meta.freelist)),
            }
        }
        ck.check_tree(self.meta.root, &[]);
        if self.meta.freelist != NO_FREELIST {
            for i in 0..hwm {
                if ck.full() {
                    break;
                }
                if !ck.reachable.get(i) && !ck.freed.get(i) {
                    ck.error(format!("page {i}: unreachable unfreed"));
                }
            }
        }
        if ck.errors.is_empty() { Ok(()) } else { Err(Error::Check(ck.errors)) }
    }

    /// The freelist page's overflow count and the page ids it lists.
    fn freelist_ids(&self) -> Result<(u32, Vec<u64>)> {
        let page = self.read_page(self.meta.freelist)?;
        let header = PageHeader::parse(&page.bytes).ok_or_else(|| Error::Corrupt("truncated freelist page".into()))?;
        if header.flags != FREELIST_PAGE {
            return Err(Error::Corrupt(format!("is a {} page, not a freelist", page_type(header.flags))));
        }
        let (first, count) = if header.count == FREELIST_COUNT_OVERFLOW {
            let n = u64_at(&page.bytes, PAGE_HEADER_SIZE).ok_or_else(|| Error::Corrupt("truncated count".into()))?;
            (1, n)
        } else {
            (0, u64::from(header.count))
        };
        let fits = (page.bytes.len() - PAGE_HEADER_SIZE) as u64 / 8;
        if count.saturating_add(first as u64) > fits {
            return Err(Error::Corrupt(format!("{count} page ids do not fit in the page")));
        }
        let ids = (0..count as usize).filter_map(|i| u64_at(&page.bytes, PAGE_HEADER_SIZE + 8 * (first + i))).collect();
        Ok((header.overflow, ids))
    }
}

impl Checker<'_> {
    /// Checks the bucket tree whose root page is `root`; `stack` lists the pages above it.
    fn check_tree(&mut self, root: u64, stack: &[u64]) {
        self.check_page(root, None, None, stack);
    }

    /// Checks page `id` and its subtree: reachability, type, and that its keys lie in
    /// `[min, max)`. Returns the largest key of the subtree.
    fn check_page(&mut self, id: u64, min: Option<&[u8]>, max: Option<&[u8]>, stack: &[u64]) -> Option<Vec<u8>> {
        if self.full() {
            return None;
        }
        if stack.len() > MAX_DEPTH {
            self.error(format!("page {id}: nested deeper than {MAX_DEPTH} pages (stack: {stack:?})"));
            return None;
        }
        let hwm = self.reader.meta.pgid;
        if id < 2 || id >= hwm {
            self.error(format!("page {id}: out of bounds: {hwm} (stack: {stack:?})"));
            return None;
        }
        let page = match self.reader.read_page(id) {
            Ok(p) => p,
            Err(e) => {
                self.error(format!("page {id}: {e} (stack: {stack:?})"));
                return None;
            }
        };
        let overflow = PageHeader::parse(&page.bytes).map_or(0, |h| h.overflow);
        let mut seen = false;
        for i in 0..=u64::from(overflow) {
            if self.reachable.set(id + i) {
                self.error(format!("page {}: multiple references (stack: {stack:?})", id + i));
                seen = seen || i == 0;
            }
        }
        if seen {
            // Do not walk a subtree twice (nor loop on a cycle).
            return None;
        }
        if self.freed.get(id) {
            self.error(format!("page {id}: reachable freed"));
        }
        let view = match page.view() {
            Ok(v) => v,
            Err(e) => {
                self.error(e.to_string());
                return None;
            }
        };
        let mut stack = stack.to_vec();
        stack.push(id);
        if view.is_branch() {
            self.check_branch(&page, &view, min, max, &stack)
        } else if view.is_leaf() {
            self.check_leaf(&page, &view, min, max, &stack)
        } else {
            self.error(format!("page {id}: invalid type: {} (stack: {stack:?})", page_type(view.header.flags)));
            None
        }
    }

    fn check_branch(
        &mut self,
        page: &OwnedPage,
        view: &PageView<'_>,
        min: Option<&[u8]>,
        max: Option<&[u8]>,
        stack: &[u64],
    ) -> Option<Vec<u8>> {
        let what = page.what();
        let mut running_min: Option<Vec<u8>> = min.map(<[u8]>::to_vec);
        let mut largest = None;
        for i in 0..view.count() {
            let elem = match view.branch(i, &what) {
                Ok(e) => e,
                Err(e) => {
                    self.error(e.to_string());
                    return None;
                }
            };
            self.key_order("branch", i, elem.key, running_min.as_deref(), max, stack);
            let next_key = if i + 1 < view.count() { view.branch(i + 1, &what).ok().map(|e| e.key) } else { max };
            largest = self.check_page(elem.pgid, Some(elem.key), next_key, stack);
            running_min = largest.clone();
        }
        largest
    }

    fn check_leaf(
        &mut self,
        page: &OwnedPage,
        view: &PageView<'_>,
        min: Option<&[u8]>,
        max: Option<&[u8]>,
        stack: &[u64],
    ) -> Option<Vec<u8>> {
        let what = page.what();
        let mut previous = min;
        for i in 0..view.count() {
            let elem = match view.leaf(i, &what) {
                Ok(e) => e,
                Err(e) => {
                    self.error(e.to_string());
                    return None;
                }
            };
            self.key_order("leaf", i, elem.key, previous, max, stack);
            previous = Some(elem.key);
            if elem.is_bucket() {
                match parse_bucket_value(elem.value) {
                    Some(BucketRoot::Page(root)) => self.check_tree(root, stack),
                    Some(BucketRoot::Inline(bytes)) => self.check_inline(bytes, stack),
                    None => self.error(format!("{}: bucket {:?} has a truncated header", what(), show(elem.key))),
                }
            }
        }
        previous.filter(|_| view.count() > 0).map(<[u8]>::to_vec)
    }

    /// An inline bucket owns no page; bbolt's check skips it. Its keys are checked for order.
    fn check_inline(&mut self, bytes: &[u8], stack: &[u64]) {
        let page = OwnedPage { id: None, bytes: bytes.to_vec() };
        match page.view() {
            Ok(view) if view.is_leaf() => {
                let what = page.what();
                let mut previous: Option<&[u8]> = None;
                for i in 0..view.count() {
                    match view.leaf(i, &what) {
                        Ok(e) => {
                            self.key_order("inline leaf", i, e.key, previous, None, stack);
                            previous = Some(e.key);
                        }
                        Err(e) => return self.error(e.to_string()),
                    }
                }
            }
            Ok(view) => self.error(format!("inline bucket page is a {} page", page_type(view.header.flags))),
            Err(e) => self.error(e.to_string()),
        }
    }

    /// bbolt's key order rule for element `index` of a page: the first key is >= the lower
    /// bound, every other key > the previous one, every key < the upper bound.
    fn key_order(
        &mut self,
        kind: &str,
        index: usize,
        key: &[u8],
        previous: Option<&[u8]>,
        max: Option<&[u8]>,
        stack: &[u64],
    ) {
        let page = stack.last().copied().unwrap_or_default();
        if let Some(prev) = previous {
            if index == 0 && prev > key {
                self.error(format!(
                    "the first key[0]={:?} on {kind} page({page}) needs to be >= the key in the ancestor ({:?}). Stack: {stack:?}",
                    show(key),
                    show(prev)
                ));
            }
            if index > 0 && prev >= key {
                self.error(format!(
                    "key[{index}]={:?} on {kind} page({page}) needs to be > than previous element {:?}. Stack: {stack:?}",
                    show(key),
                    show(prev)
                ));
            }
        }
        if let Some(max) = max
            && key >= max
        {
            self.error(format!(
                "key[{index}]={:?} on {kind} page({page}) needs to be < than key of the next element in ancestor {:?}. Stack: {stack:?}",
                show(key),
                show(max)
            ));
        }
    }
}

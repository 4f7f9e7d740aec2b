//! The on-disk layout of a bbolt file: page headers, page elements, bucket headers and the
//! meta page, all little-endian.
//!
//! A file is a sequence of fixed-size pages. Pages 0 and 1 hold the two meta records; every
//! other page is a branch, leaf or freelist page, possibly followed by `overflow` continuation
//! pages that together form one logical page.

use crate::{Error, Result};

/// Size of the header at the start of every page: `id u64 | flags u16 | count u16 | overflow u32`.
pub(crate) const PAGE_HEADER_SIZE: usize = 16;
/// Size of one element of a leaf page (`flags | pos | ksize | vsize`, four u32) and of a branch
/// page (`pos u32 | ksize u32 | pgid u64`); both are 16 bytes.
pub(crate) const ELEMENT_SIZE: usize = 16;
/// Size of a bucket's header in its parent's value: `root pgid u64 | sequence u64`.
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;
/// Size of the meta record that follows the page header on pages 0 and 1.
pub(crate) const META_SIZE: usize = 64;
/// Offset of the checksum inside the meta record; the checksum covers the bytes before it.
const META_CHECKSUM_OFFSET: usize = 56;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;

/// Leaf element flag: the value is a nested bucket's header (and maybe an inline page).
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// Freelist page id meaning "no freelist was written" (bbolt's `NoFreelistSync`).
pub(crate) const NO_FREELIST: u64 = u64::MAX;
/// A freelist page whose `count` holds this value keeps the real count in its first u64.
pub(crate) const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

/// Largest key bbolt accepts.
pub const MAX_KEY_SIZE: usize = 32768;
/// Largest value bbolt accepts.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// Most elements the writer puts on one page (bbolt refuses to write a node of 0xFFFF or more).
pub(crate) const MAX_PAGE_ELEMENTS: usize = 0xFFFE;

/// Smallest and largest page sizes the writer accepts (bbolt probes for the second meta page
/// at 1 KiB to 16 MiB when the first one is damaged).
pub const MIN_PAGE_SIZE: u32 = 1024;
/// See [`MIN_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: u32 = 1 << 24;

pub(crate) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

pub(crate) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(buf: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(buf, 0)?,
            flags: u16_at(buf, 8)?,
            count: u16_at(buf, 10)?,
            overflow: u32_at(buf, 12)?,
        })
    }

    pub fn encode(&self) -> [u8; PAGE_HEADER_SIZE] {
        let mut out = [0u8; PAGE_HEADER_SIZE];
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
        out
    }
}

/// Human name of a page type, for messages.
pub(crate) fn page_type(flags: u16) -> String {
    match flags {
        BRANCH_PAGE => "branch".into(),
        LEAF_PAGE => "leaf".into(),
        META_PAGE => "meta".into(),
        FREELIST_PAGE => "freelist".into(),
        other => format!("unknown<{other:02x}>"),
    }
}

/// One element of a leaf page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafElement<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl LeafElement<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF_FLAG != 0
    }
}

/// One element of a branch page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BranchElement<'a> {
    pub key: &'a [u8],
    pub pgid: u64,
}

/// A branch or leaf page (or an inline bucket page) held in memory, with bounds-checked access
/// to its elements. `what` names the page in error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageView<'a> {
    pub header: PageHeader,
    buf: &'a [u8],
}

impl<'a> PageView<'a> {
    /// Wraps page bytes; checks that the header and the element table fit.
    pub fn new(buf: &'a [u8], what: &dyn Fn() -> String) -> Result<PageView<'a>> {
        let header =
            PageHeader::parse(buf).ok_or_else(|| Error::Corrupt(format!("{}: truncated page header", what())))?;
        let table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * usize::from(header.count);
        if (header.flags == LEAF_PAGE || header.flags == BRANCH_PAGE) && table_end > buf.len() {
            return Err(Error::Corrupt(format!(
                "{}: {} elements do not fit in {} bytes",
                what(),
                header.count,
                buf.len()
            )));
        }
        Ok(PageView { header, buf })
    }

    pub fn is_leaf(&self) -> bool {
        self.header.flags == LEAF_PAGE
    }

    pub fn is_branch(&self) -> bool {
        self.header.flags == BRANCH_PAGE
    }

    pub fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    /// The slice `len` bytes long at `pos` bytes after the element starting at `elem`.
    fn slice_from(&self, elem: usize, pos: u32, len: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let start = elem.checked_add(pos as usize);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.buf.len() => Ok(&self.buf[s..e]),
            _ => Err(Error::Corrupt(format!("{}: element data out of the page bounds", what()))),
        }
    }

    pub fn leaf(&self, i: usize, what: &dyn Fn() -> String) -> Result<LeafElement<'a>> {
        let off = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
        let field = |at: usize| {
            u32_at(self.buf, off + at).ok_or_else(|| Error::Corrupt(format!("{}: truncated element", what())))
        };
        let (flags, pos, ksize, vsize) = (field(0)?, field(4)?, field(8)?, field(12)?);
        let both = self.slice_from(off, pos, ksize as usize + vsize as usize, what)?;
        let (key, value) = both.split_at(ksize as usize);
        Ok(LeafElement { flags, key, value })
    }

    pub fn branch(&self, i: usize, what: &dyn Fn() -> String) -> Result<BranchElement<'a>> {
        let off = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
        let truncated = || Error::Corrupt(format!("{}: truncated element", what()));
        let pos = u32_at(self.buf, off).ok_or_else(truncated)?;
        let ksize = u32_at(self.buf, off + 4).ok_or_else(truncated)?;
        let pgid = u64_at(self.buf, off + 8).ok_or_else(truncated)?;
        let key = self.slice_from(off, pos, ksize as usize, what)?;
        Ok(BranchElement { key, pgid })
    }
}

/// Where a bucket's tree lives: its own root page, or a leaf page inlined in the parent's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BucketRoot<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// Parses a bucket value (`root | sequence`, then the inline page when `root` is 0).
pub(crate) fn parse_bucket_value(value: &[u8]) -> Option<BucketRoot<'_>> {
    let root = u64_at(value, 0)?;
    u64_at(value, 8)?;
    if root == 0 { Some(BucketRoot::Inline(&value[BUCKET_HEADER_SIZE..])) } else { Some(BucketRoot::Page(root)) }
}

/// The meta record of pages 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// The record's 64 bytes, checksum included.
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut out = [0u8; META_SIZE];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.root.to_le_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        out[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        out[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&out[..META_CHECKSUM_OFFSET]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes and validates a meta record as bbolt does: magic, then version, then checksum.
    /// The error is the reason the record is invalid.
    pub fn decode(buf: &[u8]) -> std::result::Result<Meta, String> {
        let rec = buf.get(..META_SIZE).ok_or_else(|| "truncated meta page".to_string())?;
        let u32f = |o| u32_at(rec, o).unwrap_or_default();
        let u64f = |o| u64_at(rec, o).unwrap_or_default();
        if u32f(0) != MAGIC {
            return Err(format!("invalid magic {:#010x}", u32f(0)));
        }
        if u32f(4) != VERSION {
            return Err(format!("version {} is not {VERSION}", u32f(4)));
        }
        let sum = fnv1a64(&rec[..META_CHECKSUM_OFFSET]);
        if u64f(META_CHECKSUM_OFFSET) != sum {
            return Err(format!("checksum {:#018x} is not {sum:#018x}", u64f(META_CHECKSUM_OFFSET)));
        }
        Ok(Meta {
            page_size: u32f(8),
            flags: u32f(12),
            root: u64f(16),
            sequence: u64f(24),
            freelist: u64f(32),
            pgid: u64f(40),
            txid: u64f(48),
        })
    }

    /// A whole meta page (`page_size` bytes) for page `id`.
    pub fn page(&self, id: u64) -> Vec<u8> {
        let mut page = vec![0u8; self.page_size as usize];
        let header = PageHeader { id, flags: META_PAGE, count: 0, overflow: 0 };
        page[..PAGE_HEADER_SIZE].copy_from_slice(&header.encode());
        page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE].copy_from_slice(&self.encode());
        page
    }
}

/// Bytes shown in messages: printable ASCII as is, the rest escaped.
pub(crate) fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let meta = Meta { page_size: 4096, flags: 0, root: 3, sequence: 0, freelist: 2, pgid: 4, txid: 7 };
        let mut rec = meta.encode();
        assert_eq!(Meta::decode(&rec), Ok(meta));
        rec[20] ^= 1;
        assert!(Meta::decode(&rec).unwrap_err().contains("checksum"));
        rec[0] ^= 1;
        assert!(Meta::decode(&rec).unwrap_err().contains("magic"));
    }

    #[test]
    fn page_header_round_trips() {
        let h = PageHeader { id: 9, flags: LEAF_PAGE, count: 300, overflow: 2 };
        assert_eq!(PageHeader::parse(&h.encode()), Some(h));
    }
}

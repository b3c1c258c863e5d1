//! The subset of bbolt's file format that etcd's snapshots use: read any bbolt file
//! made of top-level buckets of keys and values, write one in a single sequential pass.
//!
//! Why our own: etcd's snapshot is a bbolt database, and moving data from etcd and back
//! needs to read and write one. The one Rust port on crates.io (`bbolt-rs`) is a whole
//! database engine over a memory-mapped file with some twenty dependencies; raftkv
//! needs neither transactions nor in-place updates, but it does need a writer that
//! *streams* (a snapshot goes out over gRPC as it is made, never as a file) and a reader
//! that treats every byte as hostile. Both are small: this crate.
//!
//! # File format (bbolt version 2; integers little-endian, as bbolt writes them on
//! every platform etcd ships for)
//!
//! The file is an array of pages of `page_size` bytes (the writer uses 4096, the OS page
//! size etcd runs with; the reader takes it from the meta page). Page `n` starts at byte
//! `n * page_size`. Every page opens with a 16-byte header:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | page id (its own number) |
//! | 8 | 2 | flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist |
//! | 10 | 2 | count: elements on a branch or leaf page, ids on a freelist page |
//! | 12 | 4 | overflow: the page continues over this many further pages |
//!
//! **Meta pages** (pages 0 and 1, identical but for their id in what we write) hold,
//! after the header, 64 bytes:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 16 | 4 | magic `0xED0CDAED` |
//! | 20 | 4 | version, 2 |
//! | 24 | 4 | page size |
//! | 28 | 4 | flags (0) |
//! | 32 | 16 | root bucket header: root page id, sequence |
//! | 48 | 8 | freelist page id (`u64::MAX`: no freelist stored) |
//! | 56 | 8 | high-water mark: pages in use (file is at least this many pages) |
//! | 64 | 8 | transaction id |
//! | 72 | 8 | checksum: FNV-1a 64 over the 56 bytes from the magic |
//!
//! A reader uses the valid meta with the higher transaction id (bbolt keeps two so a
//! torn write of one leaves the other).
//!
//! **Freelist page**: `count` page ids of 8 bytes after the header; a count of 0xFFFF
//! means the real count is the first 8-byte word, the ids follow it.
//!
//! **Leaf page**: `count` elements of 16 bytes after the header, then the keys and
//! values. Element: flags u32 (0x01: the value is a bucket), pos u32, key size u32,
//! value size u32; the key starts `pos` bytes after the element's own first byte, the
//! value right after the key. Keys are in strictly increasing byte order.
//!
//! **Branch page**: `count` elements of 16 bytes: pos u32, key size u32, child page id
//! u64; `pos` as in leaves. The key is the first key under that child.
//!
//! **Buckets**: the meta's root bucket is a tree whose leaves map each top-level bucket
//! name to a bucket value: its 16-byte header (root page id, sequence), and, when the
//! root page id is 0 (an *inline* bucket, bbolt's form for small buckets), the bucket's
//! only leaf page right after it, in the value itself (its page id is meaningless).
//!
//! **Overflow**: a page whose elements do not fit in one page spans `overflow + 1`
//! consecutive pages; the ids of the following pages are not used by anything else.
//!
//! bbolt's consistency check (`etcdctl snapshot status` runs it) requires every page
//! below the high-water mark to be reachable from a meta page or listed in the freelist.
//! The writer lays pages out densely (metas, an empty freelist, each bucket's leaves then
//! its branch levels bottom-up, finally the root bucket's leaf), so it holds.
//!
//! The reader checks every offset, size, page id, flag and key order before it uses it
//! and refuses cycles and shared pages: a damaged file is an [`Error`] naming the page,
//! never a panic. Nested buckets (not used by etcd) are refused.

mod read;
mod write;

pub use read::{Db, Error, KvFn, Source};
pub use write::{write_db, DbWriter};

/// Magic number in a meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The format version this crate reads and writes.
pub const VERSION: u32 = 2;
/// The page size the writer uses (etcd's on Linux x86-64).
pub const PAGE_SIZE: u32 = 4096;
/// Bytes of a page header.
pub const PAGE_HEADER_BYTES: usize = 16;
/// Bytes of a branch or leaf element.
pub const ELEMENT_BYTES: usize = 16;
/// Bytes of a bucket header (root page id, sequence).
pub const BUCKET_HEADER_BYTES: usize = 16;
/// Page flag: branch page.
pub const FLAG_BRANCH: u16 = 0x01;
/// Page flag: leaf page.
pub const FLAG_LEAF: u16 = 0x02;
/// Page flag: meta page.
pub const FLAG_META: u16 = 0x04;
/// Page flag: freelist page.
pub const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket.
pub const ELEMENT_BUCKET: u32 = 0x01;
/// Freelist page id meaning "no freelist stored".
pub const NO_FREELIST: u64 = u64::MAX;
/// Bytes of the meta fields the checksum covers.
const META_SUMMED_BYTES: usize = 56;

/// FNV-1a, 64 bits: the checksum of bbolt's meta pages.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;

//! The writer: one sequential pass, pages in the order they are written.
//!
//! The meta pages come first in the file but name the root page and the page count,
//! which are known only at the end; so [`write_db`] runs the caller's fill twice, first
//! into nothing to learn them, then for real. The fill must produce the same buckets and
//! keys both times (a frozen view does); the writer checks that it did.

use crate::*;
use std::io::{self, Write};

/// Builds the file: buckets in increasing name order, each with its keys in increasing
/// order. Memory: one page of pending elements plus the first key of every page of the
/// current bucket (for its branch pages).
pub struct DbWriter<'a> {
    out: &'a mut dyn Write,
    page_size: usize,
    next_pgid: u64,
    /// Top-level buckets finished: name and bucket value.
    buckets: Vec<(Vec<u8>, Vec<u8>)>,
    /// Name of the bucket being written.
    current: Option<Vec<u8>>,
    /// Its leaf elements not yet on a page, and their bytes (elements included).
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    pending_bytes: usize,
    /// Its last key put.
    last_key: Option<Vec<u8>>,
    /// `(first key, page id)` of each page written for it so far.
    pages: Vec<(Vec<u8>, u64)>,
    /// Writing the root bucket's tree, whose values are buckets.
    root_level: bool,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn header(id: u64, flags: u16, count: usize, overflow: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(PAGE_HEADER_BYTES);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(count as u16).to_le_bytes());
    h.extend_from_slice(&(overflow as u32).to_le_bytes());
    h
}

/// A leaf or branch page body: elements, then keys (and values). `child` is the page id
/// for branch elements, `None` for leaf elements.
fn tree_page(id: u64, flags: u16, elems: &[(&[u8], &[u8], Option<u64>)]) -> Vec<u8> {
    let mut page = header(id, flags, elems.len(), 0);
    let mut data_off = PAGE_HEADER_BYTES + elems.len() * ELEMENT_BYTES;
    let mut tail = Vec::new();
    for (i, (k, v, child)) in elems.iter().enumerate() {
        let pos = (data_off - PAGE_HEADER_BYTES - i * ELEMENT_BYTES) as u32;
        match child {
            None => {
                page.extend_from_slice(&0u32.to_le_bytes());
                page.extend_from_slice(&pos.to_le_bytes());
                page.extend_from_slice(&(k.len() as u32).to_le_bytes());
                page.extend_from_slice(&(v.len() as u32).to_le_bytes());
            }
            Some(c) => {
                page.extend_from_slice(&pos.to_le_bytes());
                page.extend_from_slice(&(k.len() as u32).to_le_bytes());
                page.extend_from_slice(&c.to_le_bytes());
            }
        }
        tail.extend_from_slice(k);
        tail.extend_from_slice(v);
        data_off += k.len() + v.len();
    }
    page.extend_from_slice(&tail);
    page
}

impl DbWriter<'_> {
    /// Starts bucket `name`, finishing the one before it.
    pub fn bucket(&mut self, name: &[u8]) -> io::Result<()> {
        self.finish_bucket()?;
        if self.buckets.last().is_some_and(|(last, _)| last.as_slice() >= name) {
            return Err(invalid(format!("bucket {name:?} is not after the one before")));
        }
        self.current = Some(name.to_vec());
        Ok(())
    }

    /// Adds `key` = `value` to the current bucket; keys must increase.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.current.is_none() {
            return Err(invalid("put before any bucket was started".into()));
        }
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(invalid(format!("key {key:?} is not after the key before it")));
        }
        if u32::try_from(key.len()).is_err() || u32::try_from(value.len()).is_err() {
            return Err(invalid(format!("key or value of key {key:?} is over 4 GiB")));
        }
        let size = ELEMENT_BYTES + key.len() + value.len();
        if !self.pending.is_empty()
            && PAGE_HEADER_BYTES + self.pending_bytes + size > self.page_size
        {
            self.flush_leaf()?;
        }
        self.pending.push((key.to_vec(), value.to_vec()));
        self.pending_bytes += size;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    /// Writes `page` (a header and body) as the next page(s), padded to whole pages.
    /// Returns its id.
    fn emit(&mut self, mut page: Vec<u8>) -> io::Result<u64> {
        let id = self.next_pgid;
        let spans = page.len().div_ceil(self.page_size).max(1);
        page[..8].copy_from_slice(&id.to_le_bytes());
        page[12..16].copy_from_slice(&((spans - 1) as u32).to_le_bytes());
        page.resize(spans * self.page_size, 0);
        self.out.write_all(&page)?;
        self.next_pgid += spans as u64;
        Ok(id)
    }

    fn flush_leaf(&mut self) -> io::Result<()> {
        let elems: Vec<_> =
            self.pending.iter().map(|(k, v)| (k.as_slice(), v.as_slice(), None)).collect();
        let mut page = tree_page(0, FLAG_LEAF, &elems);
        if self.root_level {
            for i in 0..elems.len() {
                let off = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
                page[off..off + 4].copy_from_slice(&ELEMENT_BUCKET.to_le_bytes());
            }
        }
        let id = self.emit(page)?;
        let first = self.pending[0].0.clone();
        self.pages.push((first, id));
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes branch levels over `pages` until one page remains; returns its id.
    fn branch_levels(&mut self, mut pages: Vec<(Vec<u8>, u64)>) -> io::Result<u64> {
        while pages.len() > 1 {
            let mut upper = Vec::new();
            let mut start = 0;
            while start < pages.len() {
                let mut end = start;
                let mut bytes = PAGE_HEADER_BYTES;
                // At least two children per branch page, so each level shrinks.
                while end < pages.len()
                    && (end < start + 2
                        || bytes + ELEMENT_BYTES + pages[end].0.len() <= self.page_size)
                {
                    bytes += ELEMENT_BYTES + pages[end].0.len();
                    end += 1;
                }
                let elems: Vec<_> = pages[start..end]
                    .iter()
                    .map(|(k, id)| (k.as_slice(), &[][..], Some(*id)))
                    .collect();
                let id = self.emit(tree_page(0, FLAG_BRANCH, &elems))?;
                upper.push((pages[start].0.clone(), id));
                start = end;
            }
            pages = upper;
        }
        Ok(pages[0].1)
    }

    fn finish_bucket(&mut self) -> io::Result<()> {
        let Some(name) = self.current.take() else { return Ok(()) };
        self.last_key = None;
        let mut value = Vec::with_capacity(BUCKET_HEADER_BYTES + PAGE_HEADER_BYTES);
        if self.pending.is_empty() && self.pages.is_empty() {
            // An empty bucket is inline, as bbolt writes it: root 0, then an empty leaf.
            value.extend_from_slice(&[0u8; BUCKET_HEADER_BYTES]);
            value.extend_from_slice(&header(0, FLAG_LEAF, 0, 0));
        } else {
            if !self.pending.is_empty() {
                self.flush_leaf()?;
            }
            let pages = std::mem::take(&mut self.pages);
            let root = self.branch_levels(pages)?;
            value.extend_from_slice(&root.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
        }
        self.buckets.push((name, value));
        Ok(())
    }

    /// Finishes the last bucket and writes the root bucket's tree; returns its root page.
    fn finish(&mut self) -> io::Result<u64> {
        self.finish_bucket()?;
        let buckets = std::mem::take(&mut self.buckets);
        for (name, value) in buckets {
            self.current = Some(Vec::new());
            self.root_level = true;
            self.put(&name, &value)?;
        }
        self.current = None;
        if self.pending.is_empty() {
            return self.emit(header(0, FLAG_LEAF, 0, 0));
        }
        self.root_level = true;
        self.flush_leaf()?;
        let pages = std::mem::take(&mut self.pages);
        self.branch_levels(pages)
    }
}

/// Discards what is written, counting nothing: the first pass only needs page ids.
struct Nowhere;

impl Write for Nowhere {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn meta_page(id: u64, page_size: usize, root: u64, pages: u64, txid: u64) -> Vec<u8> {
    let mut page = header(id, FLAG_META, 0, 0);
    page.extend_from_slice(&MAGIC.to_le_bytes());
    page.extend_from_slice(&VERSION.to_le_bytes());
    page.extend_from_slice(&(page_size as u32).to_le_bytes());
    page.extend_from_slice(&0u32.to_le_bytes());
    page.extend_from_slice(&root.to_le_bytes());
    page.extend_from_slice(&0u64.to_le_bytes());
    page.extend_from_slice(&2u64.to_le_bytes()); // the freelist: page 2
    page.extend_from_slice(&pages.to_le_bytes());
    page.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv1a64(&page[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + META_SUMMED_BYTES]);
    page.extend_from_slice(&sum.to_le_bytes());
    page.resize(page_size, 0);
    page
}

/// Total bytes of the file a fill produces, and its root page and page count.
fn layout(
    page_size: usize,
    fill: &mut dyn FnMut(&mut DbWriter) -> io::Result<()>,
) -> io::Result<(u64, u64)> {
    let mut nowhere = Nowhere;
    let mut w = DbWriter::new(&mut nowhere, page_size);
    fill(&mut w)?;
    let root = w.finish()?;
    Ok((root, w.next_pgid))
}

impl<'a> DbWriter<'a> {
    fn new(out: &'a mut dyn Write, page_size: usize) -> Self {
        DbWriter {
            out,
            page_size,
            next_pgid: 3, // after the two metas and the freelist
            buckets: Vec::new(),
            current: None,
            pending: Vec::new(),
            pending_bytes: 0,
            last_key: None,
            pages: Vec::new(),
            root_level: false,
        }
    }
}

/// Writes a bbolt file of [`PAGE_SIZE`] pages to `out` with the buckets and keys that
/// `fill` puts (it is called twice and must put the same both times). Returns the
/// file's size in bytes, announced by `size` before the first byte is written (a
/// stream that says how much is coming needs it).
pub fn write_db(
    out: &mut dyn Write,
    txid: u64,
    size: &mut dyn FnMut(u64) -> io::Result<()>,
    fill: &mut dyn FnMut(&mut DbWriter) -> io::Result<()>,
) -> io::Result<u64> {
    let page_size = PAGE_SIZE as usize;
    let (root, pages) = layout(page_size, fill)?;
    size(pages * page_size as u64)?;
    out.write_all(&meta_page(0, page_size, root, pages, txid))?;
    out.write_all(&meta_page(1, page_size, root, pages, txid))?;
    let mut freelist = header(2, FLAG_FREELIST, 0, 0);
    freelist.resize(page_size, 0);
    out.write_all(&freelist)?;
    let mut w = DbWriter::new(out, page_size);
    fill(&mut w)?;
    let root_again = w.finish()?;
    if (root_again, w.next_pgid) != (root, pages) {
        return Err(io::Error::other(
            "the data changed between the two passes of the bbolt writer (it must be frozen)",
        ));
    }
    Ok(pages * page_size as u64)
}

//! The reader: meta selection, then a checked walk of each bucket's tree.

use crate::*;
use std::fmt;
use std::io;

/// Where the file's bytes come from: a file read at offsets, or bytes in memory.
pub trait Source {
    /// Bytes in the source.
    fn len_bytes(&self) -> u64;
    /// Fills `buf` from `offset`; the range is within `len_bytes`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Source for [u8] {
    fn len_bytes(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

impl Source for Vec<u8> {
    fn len_bytes(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A file, with a length fixed when it was measured (bytes after it are ignored).
impl Source for (std::fs::File, u64) {
    fn len_bytes(&self) -> u64 {
        self.1
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }
}

/// Why a file cannot be read as bbolt.
#[derive(Debug)]
pub enum Error {
    /// Reading failed.
    Io(io::Error),
    /// Not a bbolt file, or damaged: what is wrong, and where.
    Corrupt(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "read failed: {e}"),
            Error::Corrupt(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

fn corrupt<T>(what: String) -> Result<T, Error> {
    Err(Error::Corrupt(what))
}

/// Called with each key and value of a bucket.
pub type KvFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// Called with each leaf element's flags, key and value.
type ElementFn<'a> = dyn FnMut(u32, &[u8], &[u8]) -> Result<(), Error> + 'a;

/// Deepest tree walked; a real bbolt tree of 2^64 keys is far shallower.
const DEPTH_MAX: u32 = 64;

/// An opened bbolt file: its chosen meta page.
pub struct Db<S: Source> {
    src: S,
    page_size: u64,
    root: u64,
    pages: u64,
    txid: u64,
}

/// A page read from the file (or an inline bucket's page), with its header fields.
struct Page {
    id: u64,
    flags: u16,
    count: usize,
    data: Vec<u8>,
}

impl Page {
    fn parse(id: u64, data: Vec<u8>) -> Page {
        let flags = u16::from_le_bytes([data[8], data[9]]);
        let count = u16::from_le_bytes([data[10], data[11]]) as usize;
        Page { id, flags, count, data }
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.data[off..off + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.data[off..off + 8].try_into().expect("8 bytes"))
    }

    /// `len` bytes at element `i`'s offset plus `pos`, bounds-checked.
    fn slice(&self, i: usize, pos: u32, len: u32) -> Result<&[u8], Error> {
        let elem = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let start = elem as u64 + u64::from(pos);
        let end = start + u64::from(len);
        if end > self.data.len() as u64 {
            return corrupt(format!(
                "page {}: element {i} points at bytes {start}..{end}, past the page end {}",
                self.id,
                self.data.len()
            ));
        }
        Ok(&self.data[start as usize..end as usize])
    }

    fn check_elements(&self) -> Result<(), Error> {
        let need = PAGE_HEADER_BYTES + self.count * ELEMENT_BYTES;
        if need > self.data.len() {
            return corrupt(format!(
                "page {}: {} elements need {need} bytes, the page has {}",
                self.id,
                self.count,
                self.data.len()
            ));
        }
        Ok(())
    }
}

fn parse_meta(page: &[u8], id: u64) -> Result<(u32, u64, u64, u64, u64), String> {
    let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().expect("8"));
    let flags = u16::from_le_bytes([page[8], page[9]]);
    if u32_at(16) != MAGIC {
        return Err(format!("meta page {id}: no bbolt magic (not a bbolt file)"));
    }
    if u32_at(20) != VERSION {
        return Err(format!("meta page {id}: bbolt version {}, not {VERSION}", u32_at(20)));
    }
    let sum = fnv1a64(&page[16..16 + META_SUMMED_BYTES]);
    if u64_at(72) != sum {
        return Err(format!("meta page {id}: checksum mismatch (damaged)"));
    }
    if flags != FLAG_META {
        return Err(format!("meta page {id}: page flags {flags:#x}, not meta"));
    }
    let page_size = u32_at(24);
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("meta page {id}: impossible page size {page_size}"));
    }
    Ok((page_size, u64_at(32), u64_at(48), u64_at(56), u64_at(64)))
}

impl<S: Source> Db<S> {
    /// Opens `src`: picks the valid meta page with the higher transaction id and
    /// checks it against the file's size.
    pub fn open(src: S) -> Result<Self, Error> {
        let len = src.len_bytes();
        let mut metas = Vec::new();
        let mut why = Vec::new();
        // Meta 0 is at 0; meta 1 at one page size, which only meta 0 tells us (try
        // the common sizes if meta 0 is damaged).
        let mut offsets = vec![(0u64, 0u64)];
        for size in [4096u64, 512, 1024, 2048, 8192, 16384, 65536] {
            offsets.push((1, size));
        }
        for (id, off) in offsets {
            if off + 80 > len {
                continue;
            }
            let mut buf = [0u8; 80];
            src.read_at(off, &mut buf)?;
            match parse_meta(&buf, id) {
                Ok(m) if id == 0 || u64::from(m.0) == off => metas.push(m),
                Ok(_) => {}
                Err(e) if id == 0 || off == 4096 => why.push(e),
                Err(_) => {}
            }
        }
        let Some(&(page_size, root, freelist, pages, txid)) = metas.iter().max_by_key(|m| m.4)
        else {
            if len < 80 {
                return corrupt(format!("{len} bytes, too short for a bbolt file"));
            }
            return corrupt(why.join("; "));
        };
        let page_size = u64::from(page_size);
        let db = Db { src, page_size, root, pages, txid };
        if pages < 3 || pages.checked_mul(page_size).is_none_or(|n| n > len) {
            return corrupt(format!(
                "the meta page counts {pages} pages of {page_size} bytes, the file has {len} \
                 bytes (truncated)"
            ));
        }
        if freelist != NO_FREELIST {
            db.check_freelist(freelist)?;
        }
        Ok(db)
    }

    /// Page size of the file.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Pages in use (the meta's high-water mark); the database's size is this times the
    /// page size.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Transaction id of the chosen meta page.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn read_page(&self, id: u64, seen: &mut Seen) -> Result<Page, Error> {
        if id < 2 || id >= self.pages {
            return corrupt(format!("page id {id} is outside the file's pages 2..{}", self.pages));
        }
        let mut header = [0u8; PAGE_HEADER_BYTES];
        self.src.read_at(id * self.page_size, &mut header)?;
        let stored = u64::from_le_bytes(header[..8].try_into().expect("8"));
        if stored != id {
            return corrupt(format!("page {id}: its header says it is page {stored}"));
        }
        let overflow = u64::from(u32::from_le_bytes(header[12..16].try_into().expect("4")));
        if id + overflow >= self.pages {
            return corrupt(format!("page {id}: overflows past the file's {} pages", self.pages));
        }
        for n in id..=id + overflow {
            seen.claim(n)?;
        }
        let mut data = vec![0u8; ((overflow + 1) * self.page_size) as usize];
        self.src.read_at(id * self.page_size, &mut data)?;
        Ok(Page::parse(id, data))
    }

    fn check_freelist(&self, id: u64) -> Result<(), Error> {
        let page = self.read_page(id, &mut Seen::default())?;
        if page.flags != FLAG_FREELIST {
            return corrupt(format!("page {id}: flags {:#x}, not a freelist", page.flags));
        }
        let (first, count) = if page.count == 0xFFFF {
            (PAGE_HEADER_BYTES + 8, page.u64_at(PAGE_HEADER_BYTES))
        } else {
            (PAGE_HEADER_BYTES, page.count as u64)
        };
        let fits = count.checked_mul(8).and_then(|n| n.checked_add(first as u64));
        if fits.is_none_or(|end| end > page.data.len() as u64) {
            return corrupt(format!("freelist page {id}: {count} ids do not fit in the page"));
        }
        for i in 0..count as usize {
            let free = page.u64_at(first + i * 8);
            if free < 2 || free >= self.pages {
                return corrupt(format!("freelist page {id}: free page {free} is out of range"));
            }
        }
        Ok(())
    }

    /// Names of the top-level buckets, in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut names = Vec::new();
        self.walk_root(&mut |name, _| {
            names.push(name.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    fn walk_root(&self, f: &mut KvFn<'_>) -> Result<(), Error> {
        let mut seen = Seen::new(self.pages);
        let mut last = None;
        self.walk(self.root, 0, &mut seen, &mut last, &mut |flags, k, v| {
            if flags & ELEMENT_BUCKET == 0 {
                return corrupt(format!(
                    "top-level key {:?} is not a bucket",
                    String::from_utf8_lossy(k)
                ));
            }
            f(k, v)
        })
    }

    /// Calls `f` with every key and value of top-level bucket `name`, in key order.
    /// Returns false if there is no such bucket. Stops at `f`'s first error.
    pub fn for_each(&self, name: &[u8], f: &mut KvFn<'_>) -> Result<bool, Error> {
        let mut header = None;
        self.walk_root(&mut |k, v| {
            if k == name {
                header = Some(v.to_vec());
            }
            Ok(())
        })?;
        let Some(value) = header else { return Ok(false) };
        let shown = String::from_utf8_lossy(name).into_owned();
        if value.len() < BUCKET_HEADER_BYTES {
            return corrupt(format!("bucket {shown:?}: header of {} bytes", value.len()));
        }
        let root = u64::from_le_bytes(value[..8].try_into().expect("8"));
        let mut seen = Seen::new(self.pages);
        let mut last = None;
        let mut leaf = |flags: u32, k: &[u8], v: &[u8]| {
            if flags & ELEMENT_BUCKET != 0 {
                return corrupt(format!("bucket {shown:?}: holds a nested bucket"));
            }
            f(k, v)
        };
        if root != 0 {
            self.walk(root, 0, &mut seen, &mut last, &mut leaf)?;
            return Ok(true);
        }
        let inline = value[BUCKET_HEADER_BYTES..].to_vec();
        if inline.len() < PAGE_HEADER_BYTES {
            return corrupt(format!("inline bucket {shown:?}: no page after its header"));
        }
        let page = Page::parse(0, inline);
        if page.flags != FLAG_LEAF {
            return corrupt(format!("inline bucket {shown:?}: page flags {:#x}", page.flags));
        }
        self.leaf(&page, &mut last, &mut leaf)?;
        Ok(true)
    }

    fn walk(
        &self,
        id: u64,
        depth: u32,
        seen: &mut Seen,
        last: &mut Option<Vec<u8>>,
        f: &mut ElementFn<'_>,
    ) -> Result<(), Error> {
        if depth > DEPTH_MAX {
            return corrupt(format!("page {id}: tree deeper than {DEPTH_MAX} levels"));
        }
        let page = self.read_page(id, seen)?;
        page.check_elements()?;
        match page.flags {
            FLAG_LEAF => self.leaf(&page, last, f),
            FLAG_BRANCH => {
                if page.count == 0 {
                    return corrupt(format!("branch page {id}: no elements"));
                }
                for i in 0..page.count {
                    let off = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
                    let child = page.u64_at(off + 8);
                    self.walk(child, depth + 1, seen, last, f)?;
                }
                Ok(())
            }
            other => corrupt(format!("page {id}: flags {other:#x} where a tree page belongs")),
        }
    }

    fn leaf(
        &self,
        page: &Page,
        last: &mut Option<Vec<u8>>,
        f: &mut ElementFn<'_>,
    ) -> Result<(), Error> {
        page.check_elements()?;
        for i in 0..page.count {
            let off = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            let flags = page.u32_at(off);
            let (pos, ksize, vsize) =
                (page.u32_at(off + 4), page.u32_at(off + 8), page.u32_at(off + 12));
            let Some(total) = ksize.checked_add(vsize) else {
                return corrupt(format!("page {}: element {i} sizes overflow", page.id));
            };
            let kv = page.slice(i, pos, total)?;
            let (k, v) = kv.split_at(ksize as usize);
            if last.as_deref().is_some_and(|l| l >= k) {
                return corrupt(format!("page {}: keys out of order at element {i}", page.id));
            }
            *last = Some(k.to_vec());
            f(flags, k, v)?;
        }
        Ok(())
    }
}

/// Pages already visited in one walk: a page reached twice is a cycle or shared page.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    fn new(pages: u64) -> Self {
        Seen { bits: vec![0; pages.div_ceil(64) as usize] }
    }

    fn claim(&mut self, id: u64) -> Result<(), Error> {
        let Some(word) = self.bits.get_mut((id / 64) as usize) else {
            return Ok(()); // the freelist check tracks nothing
        };
        let bit = 1u64 << (id % 64);
        if *word & bit != 0 {
            return corrupt(format!("page {id} is reached twice (a cycle or shared page)"));
        }
        *word |= bit;
        Ok(())
    }
}

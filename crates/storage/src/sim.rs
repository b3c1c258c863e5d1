//! The simulated twin of [`RealDisk`](crate::RealDisk): in memory, deterministic, and
//! honest about what a power cut leaves behind.

use crate::disk::Disk;
use std::collections::BTreeMap;
use std::io;

/// SplitMix64: ten lines of seeded randomness, so a run is decided by its seed alone.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: usize) -> usize {
        (self.next_u64() % (max as u64 + 1)) as usize
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// One file's two images.
#[derive(Clone, Debug, Default)]
struct SimFile {
    /// Every write so far: what reads see.
    live: Vec<u8>,
    /// What survived the last successful sync of this file.
    durable: Vec<u8>,
}

/// A directory change not yet made durable by `sync_dir`. Each is atomic on its own.
#[derive(Clone, Debug)]
enum DirOp {
    Create { name: String, inode: u64 },
    Rename { from: String, to: String, inode: u64 },
    Remove { name: String, inode: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Write,
    Sync,
    Other,
}

/// An in-memory [`Disk`] that models crashes, for tests and the simulator.
///
/// Each file keeps a *live* image (every write; what reads return) and a *durable* image
/// (what the last [`Disk::sync`] of that file made stable). The directory likewise has a
/// live and a durable name table; creations, renames and removals are durable only after
/// [`Disk::sync_dir`]. [`SimDisk::crash`] rebuilds what a power cut leaves:
///
/// - each unsynced directory change independently survives or is lost (each change is
///   atomic: a rename is never half done). This is harsher than a journaling file
///   system, which keeps them in order, on purpose;
/// - each surviving file keeps its durable image plus, when it was only appended to since
///   its last sync, a prefix of the unsynced bytes cut at an arbitrary byte (nothing,
///   everything, or a torn record). When it was truncated since, it is either the durable
///   image or a cut of the live one no shorter than their common prefix.
///
/// Every choice comes from the seed, so a run replays exactly. Fault injection:
/// [`SimDisk::fail_next_write`], [`SimDisk::fail_next_sync`], [`SimDisk::fail_after_ops`]
/// (an injected write failure first writes a seeded prefix of its bytes, like a short
/// write); [`SimDisk::corrupt_next_write`] makes a write succeed with one byte wrong (a
/// disk that lies); [`SimDisk::flip_byte`] damages stored bytes.
#[derive(Clone, Debug)]
pub struct SimDisk {
    rng: SplitMix64,
    inodes: BTreeMap<u64, SimFile>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    unsynced_dir_ops: Vec<DirOp>,
    next_inode: u64,
    fail_next_write: bool,
    fail_next_sync: bool,
    fail_after_ops: Option<u64>,
    corrupt_next_write: bool,
    synced_bytes: u64,
}

fn injected() -> io::Error {
    io::Error::other("simulated I/O error (injected by SimDisk)")
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
}

impl SimDisk {
    /// An empty disk whose crash and fault choices are decided by `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            rng: SplitMix64::new(seed),
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            unsynced_dir_ops: Vec::new(),
            next_inode: 1,
            fail_next_write: false,
            fail_next_sync: false,
            fail_after_ops: None,
            corrupt_next_write: false,
            synced_bytes: 0,
        }
    }

    /// Simulates a power cut and restart: rebuilds the directory and every file from
    /// what was durable plus what the seed lets survive (see the type docs). Pending
    /// injected faults are cleared.
    pub fn crash(&mut self) {
        let mut names = self.durable_names.clone();
        for op in std::mem::take(&mut self.unsynced_dir_ops) {
            if self.rng.coin() {
                apply_dir_op(&mut names, op);
            }
        }
        let mut inodes = BTreeMap::new();
        for &inode in names.values() {
            let file = self.inodes.get(&inode).expect("a named inode exists");
            let image = crash_image(&mut self.rng, file);
            inodes.insert(inode, SimFile { live: image.clone(), durable: image });
        }
        self.inodes = inodes;
        self.names = names.clone();
        self.durable_names = names;
        self.fail_next_write = false;
        self.fail_next_sync = false;
        self.fail_after_ops = None;
        self.corrupt_next_write = false;
    }

    /// The next `append` fails, after writing a seeded prefix of its bytes.
    pub fn fail_next_write(&mut self) {
        self.fail_next_write = true;
    }

    /// The next non-empty `append` reports success but stores one seeded byte of its
    /// data flipped, as a disk with bad firmware or a bad cable might.
    pub fn corrupt_next_write(&mut self) {
        self.corrupt_next_write = true;
    }

    /// The next `sync` or `sync_dir` fails and makes nothing durable.
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// After `n` more successful mutating operations (append, truncate, sync, rename,
    /// remove, sync_dir), the next one fails.
    pub fn fail_after_ops(&mut self, n: u64) {
        self.fail_after_ops = Some(n);
    }

    /// Damages byte `offset` of file `name` in both images, as the media might.
    ///
    /// # Panics
    /// If the file does not exist or is not longer than `offset`.
    pub fn flip_byte(&mut self, name: &str, offset: usize) {
        let inode = *self.names.get(name).expect("flip_byte: no such file");
        let file = self.inodes.get_mut(&inode).expect("named inode exists");
        file.live[offset] ^= 0xFF;
        if offset < file.durable.len() {
            file.durable[offset] ^= 0xFF;
        }
    }

    /// Bytes of file `name` that the last sync made durable, if the file exists.
    pub fn durable_len(&self, name: &str) -> Option<usize> {
        let inode = self.names.get(name)?;
        Some(self.inodes[inode].durable.len())
    }

    /// Bytes that file syncs have made durable so far, over all files (each byte counted
    /// once, by the sync that first made it durable).
    pub fn synced_bytes(&self) -> u64 {
        self.synced_bytes
    }

    /// Bytes of file `name` written so far (synced or not), if the file exists.
    pub fn live_len(&self, name: &str) -> Option<usize> {
        let inode = self.names.get(name)?;
        Some(self.inodes[inode].live.len())
    }

    fn take_fault(&mut self, kind: OpKind) -> bool {
        if let Some(n) = self.fail_after_ops.as_mut() {
            if *n == 0 {
                self.fail_after_ops = None;
                return true;
            }
            *n -= 1;
        }
        match kind {
            OpKind::Write => std::mem::take(&mut self.fail_next_write),
            OpKind::Sync => std::mem::take(&mut self.fail_next_sync),
            OpKind::Other => false,
        }
    }

    fn file_mut(&mut self, name: &str) -> io::Result<&mut SimFile> {
        let inode = *self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.inodes.get_mut(&inode).expect("named inode exists"))
    }
}

fn apply_dir_op(names: &mut BTreeMap<String, u64>, op: DirOp) {
    match op {
        DirOp::Create { name, inode } => {
            names.insert(name, inode);
        }
        DirOp::Rename { from, to, inode } => {
            if names.get(&from) == Some(&inode) {
                names.remove(&from);
                names.insert(to, inode);
            }
        }
        DirOp::Remove { name, inode } => {
            if names.get(&name) == Some(&inode) {
                names.remove(&name);
            }
        }
    }
}

/// What of one file survives a power cut.
fn crash_image(rng: &mut SplitMix64, file: &SimFile) -> Vec<u8> {
    let common = file.live.iter().zip(&file.durable).take_while(|(a, b)| a == b).count();
    if common == file.durable.len() {
        // Only appends since the last sync: keep none, all, or a torn prefix of them.
        let unsynced = file.live.len() - common;
        let keep = match rng.up_to(2) {
            0 => 0,
            1 => unsynced,
            _ => rng.up_to(unsynced),
        };
        return file.live[..common + keep].to_vec();
    }
    if rng.coin() {
        file.durable.clone()
    } else {
        let cut = common + rng.up_to(file.live.len() - common);
        file.live[..cut].to_vec()
    }
}

impl Disk for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let inode = self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.inodes[inode].live.clone())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let fail = self.take_fault(OpKind::Write);
        if !self.names.contains_key(name) {
            let inode = self.next_inode;
            self.next_inode += 1;
            self.inodes.insert(inode, SimFile::default());
            self.names.insert(name.to_string(), inode);
            self.unsynced_dir_ops.push(DirOp::Create { name: name.to_string(), inode });
        }
        let written = if fail { self.rng.up_to(bytes.len()) } else { bytes.len() };
        let flip = (!fail && !bytes.is_empty() && std::mem::take(&mut self.corrupt_next_write))
            .then(|| self.rng.up_to(bytes.len() - 1));
        let file = self.file_mut(name)?;
        let start = file.live.len();
        file.live.extend_from_slice(&bytes[..written]);
        if let Some(at) = flip {
            file.live[start + at] ^= 0xFF;
        }
        if fail {
            Err(injected())
        } else {
            Ok(())
        }
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        if self.take_fault(OpKind::Other) {
            return Err(injected());
        }
        let file = self.file_mut(name)?;
        let len = usize::try_from(len).expect("length fits in memory");
        if len > file.live.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "SimDisk cannot extend"));
        }
        file.live.truncate(len);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if self.take_fault(OpKind::Sync) {
            return Err(injected());
        }
        let file = self.file_mut(name)?;
        let newly = file.live.len().saturating_sub(file.durable.len()) as u64;
        file.durable = file.live.clone();
        self.synced_bytes += newly;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        if self.take_fault(OpKind::Other) {
            return Err(injected());
        }
        let inode = self.names.remove(from).ok_or_else(|| not_found(from))?;
        self.names.insert(to.to_string(), inode);
        let (from, to) = (from.to_string(), to.to_string());
        self.unsynced_dir_ops.push(DirOp::Rename { from, to, inode });
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        if self.take_fault(OpKind::Other) {
            return Err(injected());
        }
        let inode = self.names.remove(name).ok_or_else(|| not_found(name))?;
        self.unsynced_dir_ops.push(DirOp::Remove { name: name.to_string(), inode });
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.take_fault(OpKind::Sync) {
            return Err(injected());
        }
        self.durable_names = self.names.clone();
        self.unsynced_dir_ops.clear();
        // Unnamed inodes can no longer come back at a crash: free them.
        let named: std::collections::BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|inode, _| named.contains(inode));
        Ok(())
    }
}

//! The disk seam: a small file-level trait, and the real implementation over `std::fs`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::codec::OBSOLETE_SUFFIX;

/// The file operations storage needs, on one flat directory.
///
/// Eight methods rather than redb's five because a log-structured store also needs the
/// directory operations (create by append, rename, remove, list) whose durability is
/// separate from the files' own: a file's bytes are durable after [`Disk::sync`] of that
/// file, its *name* (creation, rename, removal) only after [`Disk::sync_dir`].
///
/// Names are plain file names (no `/`). Implementations: [`RealDisk`] for the server,
/// [`crate::SimDisk`] for tests and the simulator. Errors are operating errors: storage
/// treats any of them as fatal for the running process (see [`crate::Storage`]).
pub trait Disk {
    /// Names of all files in the directory, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Appends `bytes` at the end of a file, creating it (empty) first if it is missing.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Cuts a file down to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Makes a file's bytes durable (fdatasync). Not its name: see [`Disk::sync_dir`].
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Renames a file atomically, replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable: creations, renames and removals so far.
    fn sync_dir(&mut self) -> io::Result<()>;

    /// Removes a file nothing reads again: a WAL segment or a snapshot file that a newer
    /// durable snapshot covers. Recovery removes such a file if it survives a crash, so
    /// this removal need be neither durable nor finished when the call returns: an
    /// implementation may do it later, elsewhere, as long as removals keep their order.
    /// The default removes the file now; [`RealDisk`] hands it to a thread of its own.
    fn remove_obsolete(&mut self, name: &str) -> io::Result<()> {
        self.remove(name)
    }

    /// Up to `len` bytes of a file from `offset` (fewer where the file ends first). For
    /// reading large files (snapshots) piece by piece; the default reads the whole file,
    /// [`RealDisk`] only the range.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let all = self.read(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        Ok(all[start..start.saturating_add(len).min(all.len())].to_vec())
    }

    /// A file's length in bytes. The default reads the whole file; [`RealDisk`] asks the
    /// file system.
    fn file_len(&self, name: &str) -> io::Result<u64> {
        Ok(self.read(name)?.len() as u64)
    }
}

/// Lets a caller lend a disk to [`crate::Storage`] and keep it (for instance to crash a
/// [`crate::SimDisk`] after a failed open).
impl<T: Disk + ?Sized> Disk for &mut T {
    fn list(&self) -> io::Result<Vec<String>> {
        (**self).list()
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        (**self).read(name)
    }
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        (**self).append(name, bytes)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        (**self).truncate(name, len)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        (**self).sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        (**self).remove(name)
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        (**self).sync_dir()
    }
    fn remove_obsolete(&mut self, name: &str) -> io::Result<()> {
        (**self).remove_obsolete(name)
    }
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        (**self).read_at(name, offset, len)
    }
    fn file_len(&self, name: &str) -> io::Result<u64> {
        (**self).file_len(name)
    }
}

/// A [`Disk`] over a real directory. Keeps append handles open between writes.
#[derive(Debug)]
pub struct RealDisk {
    root: PathBuf,
    handles: BTreeMap<String, File>,
    /// Where [`Disk::remove_obsolete`] sends files; started at its first use.
    remover: Option<Remover>,
}

/// The thread behind [`RealDisk`]'s [`Disk::remove_obsolete`].
///
/// Why: removing a file frees its blocks, and on ext4 (more so mounted with `discard`,
/// as cloud disks often are) unlinking a 64 MiB WAL segment or the snapshot of 100k
/// keys took 50-200 ms. On the node thread that held every heartbeat and answer (310 ms
/// per snapshot, measured with 3 members on one VM disk); unlinked on another thread at
/// once, the next WAL fdatasync waited as long instead, for the journal commit that
/// frees the blocks. So the file is renamed out of the way (fast, and a name recovery
/// removes), then shrunk a few MiB at a time with pauses between, so that each commit
/// frees a little, then unlinked.
#[derive(Debug)]
struct Remover {
    tx: Option<mpsc::SyncSender<PathBuf>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Remover {
    /// Files waiting; past it the caller removes them itself. A snapshot makes a few
    /// files obsolete (the segments it covers and the previous snapshot), and a member
    /// takes one at a time.
    const MAX_QUEUED: usize = 64;
    /// Bytes freed at a time...
    const STEP_BYTES: u64 = 4 << 20;
    /// ...and the pause after each step.
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

    fn spawn() -> io::Result<Remover> {
        let (tx, rx) = mpsc::sync_channel::<PathBuf>(Self::MAX_QUEUED);
        let join = std::thread::Builder::new().name("raftkv-remove".into()).spawn(move || {
            for path in rx {
                // A failure leaves the file behind; the next start's recovery removes
                // it and says so.
                let _ = Self::shrink_and_remove(&path);
            }
        })?;
        Ok(Remover { tx: Some(tx), join: Some(join) })
    }

    fn shrink_and_remove(path: &Path) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        let mut len = file.metadata()?.len();
        while len > Self::STEP_BYTES {
            len -= Self::STEP_BYTES;
            file.set_len(len)?;
            std::thread::sleep(Self::PAUSE);
        }
        drop(file);
        fs::remove_file(path)
    }
}

/// Waits for the queued removals: once a `RealDisk` is dropped, none of its removals is
/// still running, so the directory can be opened again at once.
impl Drop for Remover {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl RealDisk {
    /// Uses directory `root`, creating it (and its parents) if needed. A directory it
    /// creates is made durable in its parent before this returns.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<RealDisk> {
        let root = root.into();
        if !root.is_dir() {
            fs::create_dir_all(&root)?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(RealDisk { root, handles: BTreeMap::new(), remover: None })
    }

    /// The directory this disk works in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "storage file names are plain names, got {name:?}"
        );
        self.root.join(name)
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.handles.contains_key(name) {
            let file = OpenOptions::new().create(true).append(true).open(self.path(name))?;
            self.handles.insert(name.to_string(), file);
        }
        Ok(self.handles.get_mut(name).expect("inserted above"))
    }
}

impl Disk for RealDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for dirent in fs::read_dir(&self.root)? {
            let dirent = dirent?;
            if dirent.file_type()?.is_file() {
                if let Ok(name) = dirent.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path(name))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::with_capacity(len.min(64 << 20));
        file.take(len as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    fn file_len(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name))?.len())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(bytes)
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(self.path(name))?.set_len(len)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if let Some(file) = self.handles.get(name) {
            return file.sync_data();
        }
        OpenOptions::new().append(true).open(self.path(name))?.sync_data()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.handles.remove(from);
        self.handles.remove(to);
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.handles.remove(name);
        fs::remove_file(self.path(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }

    /// Renames the file to `<name>.obsolete` and queues it for a thread of this disk's,
    /// which frees it gradually (see `Remover`); removes it here if the queue is full or
    /// no thread could be started.
    fn remove_obsolete(&mut self, name: &str) -> io::Result<()> {
        self.handles.remove(name);
        if self.remover.is_none() {
            self.remover = Remover::spawn().ok();
        }
        let Some(tx) = self.remover.as_ref().and_then(|r| r.tx.as_ref()) else {
            return fs::remove_file(self.path(name));
        };
        let renamed = self.root.join(format!("{name}{OBSOLETE_SUFFIX}"));
        fs::rename(self.path(name), &renamed)?;
        match tx.try_send(renamed) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(path) | mpsc::TrySendError::Disconnected(path)) => {
                fs::remove_file(path)
            }
        }
    }
}

//! The disk seam: a small file-level trait, and the real implementation over `std::fs`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
        Ok(RealDisk { root, handles: BTreeMap::new() })
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
}

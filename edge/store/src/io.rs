//! The storage seam: every file and directory operation of the store goes through [`Storage`],
//! so the write, delete and recovery orders of `edge/docs/design/ring-buffer.md` (F1–F7) are
//! visible in one place and can be tested against a simulated power cut ([`SimDisk`]).
//! The index (SQLite) does its own I/O; it is durable at each commit (`synchronous=FULL`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A file opened for appending by [`Storage::create_new`].
pub trait WriteFile: Send {
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// `fsync`: the file's data is durable (its directory entry is not, until the directory is synced).
    fn sync(&mut self) -> io::Result<()>;
}

pub trait Storage: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// `open(O_CREAT | O_EXCL | O_WRONLY, 0600)`.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Overwrites `data` at `offset` of an existing file and `fsync`s it.
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;
    /// `fsync` of a directory: entries created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Names and sizes of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>>;
    /// Bytes available to this process on the file system holding `dir`.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk;

struct DiskFile(File);

impl WriteFile for DiskFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Storage for Disk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        Ok(Box::new(DiskFile(f)))
    }
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.write_all_at(data, offset)?;
        f.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_file() {
                out.push((e.file_name().to_string_lossy().into_owned(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// An in-memory file system that models what a power cut keeps: a file's data as of its last
/// `fsync`, a directory's entries as of its last `fsync`. Everything else is dropped by
/// [`SimDisk::power_cut`]. [`SimDisk::crash_after`] makes the n-th next operation, and every one
/// after it, fail as if the power went at that instant.
#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<Sim>>);

#[derive(Default)]
struct Sim {
    inodes: Vec<Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    capacity: Option<u64>,
}

#[derive(Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct Dir {
    live: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut")
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?;
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok((dir.to_path_buf(), name.to_string_lossy().into_owned()))
}

impl Sim {
    fn tick(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(power_off());
        }
        self.ops += 1;
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.crashed = true;
            return Err(power_off());
        }
        Ok(())
    }
    fn dir(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}", dir.display())))
    }
    fn lookup(&mut self, path: &Path) -> io::Result<usize> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?
            .live
            .get(&name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display())))
    }
    fn used(&self) -> u64 {
        self.dirs.values().flat_map(|d| d.live.values()).map(|&i| self.inodes[i].data.len() as u64).sum()
    }
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }
    /// A disk of `bytes`: writes beyond it fail with ENOSPC.
    pub fn with_capacity(bytes: u64) -> SimDisk {
        let d = SimDisk::default();
        d.0.lock().unwrap().capacity = Some(bytes);
        d
    }
    /// The `n`-th operation from now (1 = the next one) fails, and so does everything after it.
    pub fn crash_after(&self, n: u64) {
        let mut s = self.0.lock().unwrap();
        s.crash_at = Some(s.ops + n.max(1));
    }
    pub fn crashed(&self) -> bool {
        self.0.lock().unwrap().crashed
    }
    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.0.lock().unwrap().ops
    }
    /// The power goes and comes back: every write, creation, rename and removal not made durable
    /// by an `fsync` of the file or its directory is undone.
    pub fn power_cut(&self) {
        let mut s = self.0.lock().unwrap();
        for d in s.dirs.values_mut() {
            d.live = d.durable.clone();
        }
        for i in &mut s.inodes {
            i.data = i.durable.clone();
        }
        s.crashed = false;
        s.crash_at = None;
    }
    /// Every file's current bytes (for checks that no plaintext reached the disk).
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let s = self.0.lock().unwrap();
        s.dirs
            .iter()
            .flat_map(|(d, dir)| dir.live.iter().map(move |(n, &i)| (d.join(n), i)))
            .map(|(p, i)| (p, s.inodes[i].data.clone()))
            .collect()
    }
}

struct SimFile {
    disk: SimDisk,
    ino: usize,
}

impl WriteFile for SimFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut s = self.disk.0.lock().unwrap();
        s.tick()?;
        if s.capacity.is_some_and(|c| s.used() + data.len() as u64 > c) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        s.inodes[self.ino].data.extend_from_slice(data);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.disk.0.lock().unwrap();
        s.tick()?;
        let i = &mut s.inodes[self.ino];
        i.durable = i.data.clone();
        Ok(())
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        // directories are made once, at setup; the model keeps them durable
        for a in dir.ancestors() {
            s.dirs.entry(a.to_path_buf()).or_default();
        }
        Ok(())
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let (dir, name) = split(path)?;
        if s.dir(&dir)?.live.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}", path.display())));
        }
        let ino = s.inodes.len();
        s.inodes.push(Inode::default());
        s.dir(&dir)?.live.insert(name, ino);
        Ok(Box::new(SimFile { disk: self.clone(), ino }))
    }
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let ino = s.lookup(path)?;
        let i = &mut s.inodes[ino];
        let end = offset as usize + data.len();
        if i.data.len() < end {
            i.data.resize(end, 0);
        }
        i.data[offset as usize..end].copy_from_slice(data);
        i.durable = i.data.clone();
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let d = s.dir(dir)?;
        d.durable = d.live.clone();
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let ino = s.lookup(from)?;
        let (fd, fname) = split(from)?;
        let (td, tname) = split(to)?;
        s.dir(&fd)?.live.remove(&fname);
        s.dir(&td)?.live.insert(tname, ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        s.lookup(path)?;
        let (dir, name) = split(path)?;
        s.dir(&dir)?.live.remove(&name);
        Ok(())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let ino = s.lookup(path)?;
        Ok(s.inodes[ino].data.clone())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        let entries: Vec<(String, usize)> = s.dir(dir)?.live.iter().map(|(n, &i)| (n.clone(), i)).collect();
        Ok(entries.into_iter().map(|(n, i)| (n, s.inodes[i].data.len() as u64)).collect())
    }
    fn free_bytes(&self, _dir: &Path) -> io::Result<u64> {
        let mut s = self.0.lock().unwrap();
        s.tick()?;
        Ok(match s.capacity {
            Some(c) => c.saturating_sub(s.used()),
            None => u64::MAX / 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let d = SimDisk::new();
        let dir = Path::new("/s");
        d.create_dir_all(dir).unwrap();
        let mut f = d.create_new(&dir.join("a")).unwrap();
        f.append(b"one").unwrap();
        f.sync().unwrap();
        d.sync_dir(dir).unwrap();
        f.append(b"two").unwrap();
        let mut g = d.create_new(&dir.join("b")).unwrap();
        g.append(b"x").unwrap();
        g.sync().unwrap();
        d.rename(&dir.join("a"), &dir.join("c")).unwrap();
        d.power_cut();
        assert_eq!(d.list(dir).unwrap(), vec![("a".to_string(), 3)], "b's entry and the rename were not synced");
        assert_eq!(d.read(&dir.join("a")).unwrap(), b"one");
    }

    #[test]
    fn a_crash_stops_every_later_operation() {
        let d = SimDisk::new();
        d.create_dir_all(Path::new("/s")).unwrap();
        d.crash_after(2);
        assert!(d.list(Path::new("/s")).is_ok());
        assert!(d.list(Path::new("/s")).is_err());
        assert!(d.list(Path::new("/s")).is_err());
        d.power_cut();
        assert!(d.list(Path::new("/s")).is_ok());
    }
}

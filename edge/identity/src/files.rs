//! Crash-safe writing and permission-checked reading of identity files (write temp, fsync, rename, fsync the
//! directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::IdentityError;

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> IdentityError {
    let path = path.to_owned();
    move |source| IdentityError::Io { path, op, source }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist; an existing directory is left as is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir, "create directory"))?;
    set_mode(dir, 0o700).map_err(io_err(dir, "set mode 0700 on"))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes every `(name, contents, mode)` in `dir` so that each file is either old or new after a crash: all
/// are written to temporary names and fsynced first, then renamed in order, then the directory is fsynced.
pub(crate) fn replace_all(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<(), IdentityError> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let written = files.iter().try_for_each(|&(name, contents, mode)| {
        let tmp = dir.join(format!(".{name}.tmp"));
        write_synced(&tmp, contents, mode)?;
        staged.push((tmp, dir.join(name)));
        Ok(())
    });
    if let Err(e) = written {
        for (tmp, _) in &staged {
            // Best effort: the error being returned matters more than a leftover temporary file.
            let _ = fs::remove_file(tmp);
        }
        return Err(e);
    }
    for (tmp, dest) in &staged {
        fs::rename(tmp, dest).map_err(io_err(dest, "rename into place"))?;
    }
    sync_dir(dir)
}

/// Creates `path` afresh with exactly `mode` (whatever the umask), writes `contents` and fsyncs.
fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    // A leftover from an interrupted run may have another mode; never write a key into it.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "remove stale temporary file")(e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode & 0o600);
    }
    let mut file = options.open(path).map_err(io_err(path, "create"))?;
    set_file_mode(&file, mode).map_err(io_err(path, "set mode on"))?;
    file.write_all(contents).map_err(io_err(path, "write"))?;
    file.sync_all().map_err(io_err(path, "fsync"))
}

/// Reads a private key file, or `None` if it does not exist. Refuses a file that others can read or write.
pub(crate) fn read_private(path: &Path) -> Result<Option<String>, IdentityError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "open")(e)),
    };
    // Check the file we opened, not the name, so a swap in between cannot slip past.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io_err(path, "stat"))?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions { path: path.to_owned(), mode });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path, "read"))?;
    Ok(Some(text))
}

/// Reads a file that a provisioned identity in `dir` must have.
pub(crate) fn read_required(dir: &Path, path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            IdentityError::Incomplete { dir: dir.to_owned(), missing: path.to_owned() }
        } else {
            io_err(path, "read")(e)
        }
    })
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn set_file_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Makes creations and renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir, "fsync directory"))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

//! Private key files: written atomically with mode 0600, and refused when
//! group or others may read them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{0}: key file is readable by group or others (mode {1:o}); run: chmod 600 {0}")]
    TooOpen(String, u32),
    #[error("{0}: key file is not {1} bytes")]
    Malformed(String, usize),
    #[error("{0}: file is longer than {1} bytes")]
    TooLong(String, usize),
}

fn io(path: &Path, err: std::io::Error) -> KeyFileError {
    KeyFileError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// Reads the `N`-byte key at `path`: `None` if there is no file, an error
/// if it is open to group or others or has another length.
pub fn read_key<const N: usize>(path: &Path) -> Result<Option<[u8; N]>, KeyFileError> {
    let mut bytes = match read_secret(path, N) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(KeyFileError::TooLong(p, _)) => return Err(KeyFileError::Malformed(p, N)),
        Err(e) => return Err(e),
    };
    let key: Result<[u8; N], _> = bytes.as_slice().try_into();
    zeroize::Zeroize::zeroize(&mut bytes);
    key.map(Some)
        .map_err(|_| KeyFileError::Malformed(path.display().to_string(), N))
}

/// Reads the private file at `path` (at most `max` bytes): `None` if there
/// is no file, an error if it is open to group or others or longer.
pub fn read_secret(path: &Path, max: usize) -> Result<Option<Vec<u8>>, KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen(path.display().to_string(), mode));
    }
    if meta.len() > max as u64 {
        return Err(KeyFileError::TooLong(path.display().to_string(), max));
    }
    fs::read(path).map(Some).map_err(|e| io(path, e))
}

/// Writes `bytes` to a uniquely named temp file (created with O_EXCL,
/// mode 0600) next to `path` and syncs it; the caller puts it in place.
/// Returns the directory and the temp file's path.
fn stage(path: &Path, bytes: &[u8]) -> Result<(PathBuf, PathBuf), KeyFileError> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp, e));
    }
    Ok((dir, tmp))
}

fn sync_dir(dir: &Path) -> Result<(), KeyFileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Writes `bytes` to `path` atomically (unique temp file, fsync, rename,
/// fsync of the directory) with mode 0600, creating the directory if
/// needed; replaces a file already there.
pub fn write_key(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let (dir, tmp) = stage(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    sync_dir(&dir)
}

/// Writes `bytes` to `path` as [`write_key`] does, but only if there is
/// no file there yet: `Ok(false)` if there was one (left as it is). Two
/// processes creating the same key at once: one wins, the other reads it.
pub fn create_key(path: &Path, bytes: &[u8]) -> Result<bool, KeyFileError> {
    let (dir, tmp) = stage(path, bytes)?;
    // A hard link fails if the name exists: an atomic "create if absent".
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_private_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/k");
        assert!(read_key::<4>(&p).unwrap().is_none());
        write_key(&p, &[1, 2, 3, 4]).unwrap();
        assert_eq!(read_key::<4>(&p).unwrap(), Some([1, 2, 3, 4]));
        // Created once: a second creator keeps the first key.
        let q = d.path().join("once");
        assert!(create_key(&q, &[5; 4]).unwrap());
        assert!(!create_key(&q, &[6; 4]).unwrap());
        assert_eq!(read_key::<4>(&q).unwrap(), Some([5; 4]));
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "no temp file left"
        );
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            read_key::<5>(&p),
            Err(KeyFileError::Malformed(..))
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_key::<4>(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::TooOpen(..)));
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}

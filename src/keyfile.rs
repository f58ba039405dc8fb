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
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen(path.display().to_string(), mode));
    }
    let mut bytes = fs::read(path).map_err(|e| io(path, e))?;
    let key: Result<[u8; N], _> = bytes.as_slice().try_into();
    zeroize::Zeroize::zeroize(&mut bytes);
    key.map(Some)
        .map_err(|_| KeyFileError::Malformed(path.display().to_string(), N))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync
/// of the directory) with mode 0600, creating the directory if needed.
pub fn write_key(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    // A stale temp file may have had a looser mode.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&dir, e))
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

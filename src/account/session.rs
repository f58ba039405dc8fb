//! The device session: which account this machine is logged in as, with
//! its opened keyring, kept at `~/.config/peerstore/session` (mode 0600,
//! written atomically, refused if group or others can read it).
//!
//! `peerstore login` writes it and `logout` removes it. While it exists,
//! the node's mount and the client commands act as that account, unless
//! they are given an identity file with `--identity`. Like the identity
//! file it replaces, it holds secrets in the clear: the disk's protection
//! is its mode (README, "Users and sharing", threat model).

use super::keyring::Keyring;
use crate::fs::Identity;
use crate::keyfile::{KeyFileError, read_secret, write_key};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// Largest session file, in bytes.
const MAX_SESSION: usize = 512;
/// What the file starts with.
const MAGIC: &[u8] = b"peerstore session v1\n";

/// A logged-in account on this machine.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The account name.
    pub name: String,
    /// The account's secrets.
    pub keyring: Keyring,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.name)
    }
}

impl Session {
    /// The account's identity (its signing key, which owns its tree).
    pub fn identity(&self) -> Identity {
        Identity::from_secret(self.keyring.identity)
    }
}

/// `session` next to the default identity file.
pub fn default_session_path() -> PathBuf {
    crate::fs::identity::default_identity_path().with_file_name("session")
}

/// Why the session file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    File(#[from] KeyFileError),
    #[error("{0}: not a PeerStore session file (run `peerstore logout`, then log in again)")]
    Malformed(String),
}

/// The session at `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<Session>, SessionError> {
    let Some(mut bytes) = read_secret(path, MAX_SESSION)? else {
        return Ok(None);
    };
    let s = bytes
        .strip_prefix(MAGIC)
        .and_then(|b| match postcard::take_from_bytes::<Session>(b) {
            Ok((s, [])) => Some(s),
            _ => None,
        });
    bytes.zeroize();
    match s {
        Some(s) => Ok(Some(s)),
        None => Err(SessionError::Malformed(path.display().to_string())),
    }
}

/// Writes `s` to `path` (replacing any session there).
pub fn save(path: &Path, s: &Session) -> Result<(), SessionError> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(postcard::to_stdvec(s).map_err(|_| SessionError::Malformed("encode".into()))?);
    let r = write_key(path, &bytes);
    bytes.zeroize();
    Ok(r?)
}

/// Removes the session at `path`; whether there was one.
pub fn remove(path: &Path) -> Result<bool, SessionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SessionError::File(KeyFileError::Io {
            path: path.display().to_string(),
            err: e,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_private_loaded_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cfg/session");
        assert!(load(&p).unwrap().is_none());
        let s = Session {
            name: "alice".into(),
            keyring: Keyring {
                identity: [4; 32],
                box_secret: [5; 32],
            },
        };
        save(&p, &s).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&p).unwrap().unwrap();
        assert_eq!(back.name, "alice");
        assert!(back.keyring == s.keyring);
        assert_eq!(back.identity().owner(), s.identity().owner());
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
        // Garbage is a clear error, not a panic.
        crate::keyfile::write_key(&p, b"peerstore session v1\nxx").unwrap();
        assert!(matches!(load(&p), Err(SessionError::Malformed(_))));
        crate::keyfile::write_key(&p, &[0; 600]).unwrap();
        assert!(load(&p).is_err());
    }
}

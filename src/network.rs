//! Ring admission: the network secret in a data directory, and join
//! tickets that carry it.
//!
//! `peerstore init` (or the first `peerstore node` on a data directory with
//! no `--join`) creates a network: a random secret in `DIR/network.secret`
//! (mode 0600). `peerstore invite` prints a [`Ticket`]: the secret and a
//! member's address in one copy-pasteable string. A node joining with a
//! ticket keeps the secret in its own data directory, so it restarts
//! without one. Only holders of the secret can complete a link handshake
//! with a member (see [`net::handshake`](crate::net::handshake)).
//!
//! Ticket format: `psk1` followed by URL-safe base64 (no padding) of
//! `secret (32) ‖ address (UTF-8) ‖ checksum (first 4 bytes of SHA-256 of
//! the rest)`, so a mistyped ticket is refused rather than tried.
//!
//! A ticket can also be kept in a file ([`read_ticket_file`]), so that it
//! never appears on a command line (visible to every user in `ps`).

use crate::keyfile::{KeyFileError, read_key, write_key};
use crate::net::NetworkSecret;
use crate::net::keys::SECRET_LEN;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The network secret's file in a data directory.
pub const SECRET_FILE: &str = "network.secret";
/// Where a running node records the address it advertises (for `invite`
/// and for client commands on the same machine).
pub const ADDRESS_FILE: &str = "node.addr";
/// Every ticket starts with this.
pub const TICKET_PREFIX: &str = "psk1";
/// Longest address a ticket carries.
const MAX_TICKET_ADDR: usize = 255;
/// Most bytes read from a ticket file (a ticket is under 400 characters).
const MAX_TICKET_FILE: u64 = 4096;
/// Where systemd tells a service its credentials are (`LoadCredential=`).
const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Why admission data could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("{0} already belongs to network {1}")]
    AlreadyInit(String, String),
    #[error("{dir} belongs to network {have}, but the ticket is for network {ticket}")]
    OtherNetwork {
        dir: String,
        have: String,
        ticket: String,
    },
    #[error("not a join ticket: {0}")]
    BadTicket(String),
    #[error("ticket file {0}: {1}")]
    TicketFile(String, String),
    #[error(
        "ticket file {0} is readable or writable by group or others (mode {1:o}); run: chmod 600 {0}"
    )]
    TicketFileOpen(String, u32),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The network secret kept in `dir`, if any.
pub fn load_secret(dir: &Path) -> Result<Option<NetworkSecret>, AdmissionError> {
    Ok(read_key::<SECRET_LEN>(&dir.join(SECRET_FILE))?.map(NetworkSecret::from_bytes))
}

/// Creates a new network in `dir`; refuses if `dir` already has one.
pub fn init(dir: &Path) -> Result<NetworkSecret, AdmissionError> {
    if let Some(s) = load_secret(dir)? {
        return Err(AdmissionError::AlreadyInit(
            dir.display().to_string(),
            s.network_id(),
        ));
    }
    let s = NetworkSecret::generate();
    write_key(&dir.join(SECRET_FILE), s.as_bytes())?;
    Ok(s)
}

/// The secret of `dir`, creating a new network there if it has none;
/// the flag says whether it was created.
pub fn load_or_init(dir: &Path) -> Result<(NetworkSecret, bool), AdmissionError> {
    match load_secret(dir)? {
        Some(s) => Ok((s, false)),
        None => init(dir).map(|s| (s, true)),
    }
}

/// Adopts the network of `ticket` in `dir`: stores its secret, or checks
/// that the one stored is the same.
pub fn adopt(dir: &Path, ticket: &Ticket) -> Result<(), AdmissionError> {
    match load_secret(dir)? {
        Some(s) if s == ticket.secret => Ok(()),
        Some(s) => Err(AdmissionError::OtherNetwork {
            dir: dir.display().to_string(),
            have: s.network_id(),
            ticket: ticket.secret.network_id(),
        }),
        None => Ok(write_key(&dir.join(SECRET_FILE), ticket.secret.as_bytes())?),
    }
}

/// Records the address the node in `dir` advertises.
pub fn save_address(dir: &Path, addr: &str) -> Result<(), AdmissionError> {
    // Atomic with a unique temp file: two processes on one data directory
    // (a node and `invite`) never write one temp file.
    crate::keyfile::write_key(&dir.join(ADDRESS_FILE), addr.as_bytes())?;
    Ok(())
}

/// The address the node in `dir` advertised last, if any.
pub fn load_address(dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(ADDRESS_FILE)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Reads the ticket kept in the file at `path`; `None` if the file is
/// empty (or white space only), which callers take as "no ticket".
///
/// Refused, with the path in the message: a file that is missing or
/// unreadable, one that group or others may read or write (as for key
/// files: run `chmod 600`), one longer than 4 KiB, and one that holds
/// anything but a ticket. A file in systemd's credentials directory
/// (`$CREDENTIALS_DIRECTORY`, from `LoadCredential=`) is not
/// mode-checked: systemd makes it readable by the service's user alone,
/// through its owner or an ACL (which shows in the group bits of the
/// mode). Pipes are read too (`--ticket-file <(pass show peerstore)`).
pub fn read_ticket_file(path: &Path) -> Result<Option<Ticket>, AdmissionError> {
    let shown = path.display().to_string();
    let fail = |why: String| AdmissionError::TicketFile(shown.clone(), why);
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.is_dir() {
        return Err(fail("is a directory".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !in_credentials_dir(path) {
        return Err(AdmissionError::TicketFileOpen(shown, mode));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TICKET_FILE + 1).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_TICKET_FILE {
        return Err(fail(format!(
            "longer than {MAX_TICKET_FILE} bytes: not a ticket"
        )));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ticket::parse(&text)
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

/// Whether `path` is inside the credentials directory systemd gave this
/// process.
fn in_credentials_dir(path: &Path) -> bool {
    let Some(dir) = std::env::var_os(CREDENTIALS_ENV) else {
        return false;
    };
    let canon = |p: &Path| p.canonicalize().ok();
    match (canon(&PathBuf::from(dir)), canon(path)) {
        (Some(dir), Some(file)) => file.starts_with(dir),
        _ => false,
    }
}

/// A join ticket: the network secret and the address of a member.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub secret: NetworkSecret,
    pub addr: String,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({:?} via {})", self.secret, self.addr)
    }
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let h = Sha256::digest(body);
    [h[0], h[1], h[2], h[3]]
}

impl Ticket {
    /// The ticket as one string.
    pub fn encode(&self) -> String {
        let mut body = self.secret.as_bytes().to_vec();
        body.extend_from_slice(self.addr.as_bytes());
        let sum = checksum(&body);
        body.extend_from_slice(&sum);
        format!("{TICKET_PREFIX}{}", URL_SAFE_NO_PAD.encode(&body))
    }

    /// Parses a ticket (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Ticket, AdmissionError> {
        let bad = |why: &str| AdmissionError::BadTicket(why.to_string());
        let rest = s
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| bad("it does not start with psk1 (get one with `peerstore invite`)"))?;
        let body = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| bad("it is not valid base64 (was it cut or mistyped?)"))?;
        if body.len() < SECRET_LEN + 1 + 4 || body.len() > SECRET_LEN + MAX_TICKET_ADDR + 4 {
            return Err(bad("its length is wrong (was it cut?)"));
        }
        let (data, sum) = body.split_at(body.len() - 4);
        if checksum(data) != sum {
            return Err(bad("its checksum does not match (was it mistyped?)"));
        }
        let (secret, addr) = data.split_at(SECRET_LEN);
        let addr = std::str::from_utf8(addr)
            .map_err(|_| bad("its address is not text"))?
            .to_string();
        let mut bytes = [0u8; SECRET_LEN];
        bytes.copy_from_slice(secret);
        Ok(Ticket {
            secret: NetworkSecret::from_bytes(bytes),
            addr,
        })
    }

    /// Whether `s` looks like a ticket rather than an address.
    pub fn looks_like(s: &str) -> bool {
        s.trim().starts_with(TICKET_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trip_and_damage() {
        let t = Ticket {
            secret: NetworkSecret::generate(),
            addr: "127.0.0.1:7400".into(),
        };
        let s = t.encode();
        assert!(Ticket::looks_like(&s));
        assert_eq!(Ticket::parse(&format!("  {s}\n")).unwrap(), t);
        // Any one changed character is caught.
        let mut chars: Vec<char> = s.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let damaged: String = chars.into_iter().collect();
        assert!(Ticket::parse(&damaged).is_err());
        assert!(Ticket::parse(&s[..s.len() - 3]).is_err());
        assert!(Ticket::parse("127.0.0.1:7400").is_err());
        // The debug form does not show the secret.
        let shown = format!("{t:?}");
        assert!(!shown.contains(&hex::encode(t.secret.as_bytes())[..8]));
    }

    /// Writes `text` to a new file `name` in `dir` with `mode`.
    fn file_with(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn ticket_files_are_read_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let t = Ticket {
            secret: NetworkSecret::generate(),
            addr: "192.0.2.1:7400".into(),
        };
        let good = file_with(d.path(), "good", &format!("{}\n", t.encode()), 0o600);
        assert_eq!(read_ticket_file(&good).unwrap(), Some(t.clone()));
        let empty = file_with(d.path(), "empty", " \n", 0o400);
        assert_eq!(read_ticket_file(&empty).unwrap(), None);

        let refused = [
            (d.path().join("missing"), "No such file"),
            (
                file_with(d.path(), "open", &t.encode(), 0o644),
                "mode 644); run: chmod 600",
            ),
            (
                file_with(d.path(), "wopen", &t.encode(), 0o620),
                "mode 620)",
            ),
            (
                file_with(d.path(), "bad", "psk1garbage", 0o600),
                "not a join ticket",
            ),
            (
                file_with(d.path(), "long", &"x".repeat(5000), 0o600),
                "longer than 4096 bytes",
            ),
            (d.path().to_path_buf(), "is a directory"),
        ];
        for (path, why) in refused {
            let e = read_ticket_file(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(why), "{path:?}: {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
    }

    #[test]
    fn init_adopt_and_conflicts() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_secret(d.path()).unwrap().is_none());
        let s = init(d.path()).unwrap();
        assert!(matches!(
            init(d.path()),
            Err(AdmissionError::AlreadyInit(..))
        ));
        assert_eq!(load_or_init(d.path()).unwrap(), (s.clone(), false));
        let same = Ticket {
            secret: s.clone(),
            addr: "a:1".into(),
        };
        adopt(d.path(), &same).unwrap();
        let other = Ticket {
            secret: NetworkSecret::generate(),
            addr: "a:1".into(),
        };
        assert!(matches!(
            adopt(d.path(), &other),
            Err(AdmissionError::OtherNetwork { .. })
        ));
        let e = tempfile::tempdir().unwrap();
        adopt(e.path(), &other).unwrap();
        assert_eq!(load_secret(e.path()).unwrap(), Some(other.secret));
        save_address(e.path(), "127.0.0.9:1").unwrap();
        assert_eq!(load_address(e.path()).as_deref(), Some("127.0.0.9:1"));
    }
}

//! The bytes of one block file: the block's owner claims, then the block.
//!
//! ```text
//! "PSB1"           4 bytes, magic
//! header length    u32, little-endian: n
//! header           n bytes: postcard Vec<Claim> (varint count, then per
//!                  claim: owner 32 bytes, time varint, sig varint 64 + 64 bytes)
//! data             the block, exactly as put; its key (BLAKE3, or SHA-256
//!                  before 2026-12-05: [`Id::names`]) is the file name
//! ```
//!
//! A file written by an older release holds the block alone (no magic):
//! it reads as a block without claims, which no one can release. A block
//! whose own bytes begin with the magic is told apart by its hash: a file
//! is read as the new layout only if the data after the header hashes to
//! the key.

use crate::id::Id;
use crate::ownership::Claim;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The first four bytes of a block file with claims.
const MAGIC: &[u8; 4] = b"PSB1";
/// Largest header accepted on read (a few thousand claims).
const MAX_HEADER: usize = 1 << 20;

/// The file bytes for `data` owned by `claims`.
pub fn encode(claims: &[Claim], data: &[u8]) -> Vec<u8> {
    let mut out = head(claims, data.len());
    out.extend_from_slice(data);
    out
}

/// The file bytes before the block's (magic, header length, header), with
/// room reserved for `reserve` more.
pub fn head(claims: &[Claim], reserve: usize) -> Vec<u8> {
    let header = postcard::to_stdvec(claims).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + header.len() + reserve);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// A block file's contents once checked against its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFile {
    /// The owners' claims (empty for an old file).
    pub claims: Vec<Claim>,
    /// The block.
    pub data: Vec<u8>,
}

/// Splits file bytes into claims and data, checking the data against
/// `key`; `None` if neither layout hashes to the key (a bad copy).
pub fn decode(mut bytes: Vec<u8>, key: Id) -> Option<BlockFile> {
    if let Some((claims, start)) = header(&bytes)
        && key.names(&bytes[start..])
    {
        bytes.drain(..start);
        return Some(BlockFile {
            claims,
            data: bytes,
        });
    }
    key.names(&bytes).then_some(BlockFile {
        claims: Vec::new(),
        data: bytes,
    })
}

/// Splits file bytes into claims and data without hashing the data (for
/// serving: the reader checks the data against the key; the store's scrub
/// checks its files). An old file (no header) is all data; an old file
/// whose block happens to begin with the magic and a well-formed header
/// would be split wrongly, which the reader's check catches.
pub fn split(mut bytes: Vec<u8>) -> BlockFile {
    match header(&bytes) {
        Some((claims, start)) => {
            bytes.drain(..start);
            BlockFile {
                claims,
                data: bytes,
            }
        }
        None => BlockFile {
            claims: Vec::new(),
            data: bytes,
        },
    }
}

/// The claims and where the data starts, if `bytes` begin with a
/// well-formed header.
fn header(bytes: &[u8]) -> Option<(Vec<Claim>, usize)> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    if n > MAX_HEADER || bytes.len() < 8 + n {
        return None;
    }
    let claims: Vec<Claim> = postcard::from_bytes(&bytes[8..8 + n]).ok()?;
    Some((claims, 8 + n))
}

/// Reads the file at `path`; `Ok(None)` if there is none.
pub fn read(path: &Path, key: Id) -> io::Result<Option<Option<BlockFile>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(decode(bytes, key))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The claims and data length of the file at `path` from its first bytes
/// (for indexing at open, without reading or hashing the data). An old
/// file, or one whose header does not parse, has no claims; the data is
/// checked on every read anyway.
pub fn peek(path: &Path, file_len: u64) -> io::Result<(Vec<Claim>, u64)> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 8];
    let got = read_up_to(&mut f, &mut head)?;
    if got < 8 || &head[..4] != MAGIC {
        return Ok((Vec::new(), file_len));
    }
    let n = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if n > MAX_HEADER || file_len < 8 + n as u64 {
        return Ok((Vec::new(), file_len));
    }
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)?;
    match postcard::from_bytes::<Vec<Claim>>(&buf) {
        Ok(claims) => Ok((claims, file_len - 8 - n as u64)),
        Err(_) => Ok((Vec::new(), file_len)),
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn claims_and_data_round_trip_and_old_files_still_read() {
        let data = b"some ciphertext".to_vec();
        let key = Id::hash(&data);
        let c = Claim::sign(&SigningKey::from_bytes(&[3; 32]), key, 77);
        let bytes = encode(std::slice::from_ref(&c), &data);
        let f = decode(bytes.clone(), key).unwrap();
        assert_eq!(f.claims, vec![c]);
        assert_eq!(f.data, data);
        // An old file: the block alone.
        let old = decode(data.clone(), key).unwrap();
        assert!(old.claims.is_empty());
        assert_eq!(old.data, data);
        // A block that itself starts with the magic is still itself.
        let tricky = b"PSB1\x01\x00\x00\x00\x00rest".to_vec();
        let tk = Id::hash(&tricky);
        assert_eq!(decode(tricky.clone(), tk).unwrap().data, tricky);
        // A damaged copy is no block.
        let mut bad = bytes;
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode(bad, key), None);
    }

    #[test]
    fn peek_reads_only_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 5000];
        let key = Id::hash(&data);
        let c = Claim::sign(&SigningKey::from_bytes(&[4; 32]), key, 1);
        let p = dir.path().join("b");
        let bytes = encode(std::slice::from_ref(&c), &data);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(peek(&p, bytes.len() as u64).unwrap(), (vec![c], 5000));
        std::fs::write(&p, &data).unwrap();
        assert_eq!(peek(&p, 5000).unwrap(), (Vec::new(), 5000));
    }
}

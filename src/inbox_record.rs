//! Inbox records: where other users leave a user sealed messages (shares),
//! and the rules every storage node applies before it keeps a version.
//!
//! An inbox is an ordinary signed [`Record`] whose name is
//! [`INBOX_RECORD_PREFIX`] ‖ the owner's public key, so its key hangs off
//! the owner's key alone ([`crate::record::inbox_key`]) whoever signs a
//! version. Its value is an [`InboxBody`]: a list of opaque entries
//! (sealed to the owner's box key by their senders; nodes cannot read
//! them).
//!
//! Storage nodes keep a version only if ([`judge`]):
//! - its value decodes, has at most [`MAX_INBOX_ENTRIES`] entries of at most
//!   [`MAX_INBOX_ENTRY`] bytes each, carries no clock and is not a delete;
//! - signed by the owner, it may hold any entries (the owner removes what
//!   it has read);
//! - signed by any other key (a sender signs with a throwaway key, so
//!   nodes do not learn who writes to whom), it must hold the held
//!   version's entries unchanged, in order, plus exactly one more: anyone
//!   can append, nobody but the owner can remove or change;
//! - it replaces every held version (no concurrent versions: two senders
//!   at once are ordered by the key's owner node, the loser retries).

use crate::record::{INBOX_RECORD_PREFIX, Record};
use serde::{Deserialize, Serialize};

/// Most entries an inbox holds; appends past it are refused until the
/// owner reads and removes some.
pub const MAX_INBOX_ENTRIES: usize = 64;
/// Largest entry, in bytes.
pub const MAX_INBOX_ENTRY: usize = 4096;

/// The value of an inbox record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxBody {
    /// Sealed entries, oldest first.
    pub entries: Vec<Entry>,
}

/// One sealed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl InboxBody {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding byte strings into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a record value (exactly; trailing bytes are an error).
    pub fn decode(value: &[u8]) -> Option<InboxBody> {
        match postcard::take_from_bytes::<InboxBody>(value) {
            Ok((b, [])) => Some(b),
            _ => None,
        }
    }
}

/// The record name of the inbox of `owner`.
pub fn record_name(owner: &[u8; 32]) -> Vec<u8> {
    [INBOX_RECORD_PREFIX, owner].concat()
}

/// The public key of the inbox's owner, if `rec` is an inbox record.
pub fn inbox_of(rec: &Record) -> Option<&[u8]> {
    rec.name.strip_prefix(INBOX_RECORD_PREFIX)
}

/// Checks one version of an inbox on its own and returns its body.
pub fn check_version(rec: &Record) -> Result<InboxBody, String> {
    let Some(owner) = inbox_of(rec) else {
        return Err("not an inbox record".into());
    };
    if owner.len() != 32 {
        return Err("an inbox is named by a 32-byte key".into());
    }
    if !rec.clock.is_empty() {
        return Err("inbox versions carry no clock".into());
    }
    let Some(value) = &rec.value else {
        return Err("an inbox is not deleted".into());
    };
    let body = InboxBody::decode(value).ok_or("the inbox value is malformed")?;
    if body.entries.len() > MAX_INBOX_ENTRIES {
        return Err(format!(
            "the inbox is full ({MAX_INBOX_ENTRIES} entries): its owner must read it first"
        ));
    }
    if body.entries.iter().any(|e| e.0.len() > MAX_INBOX_ENTRY) {
        return Err(format!(
            "an inbox entry is larger than {MAX_INBOX_ENTRY} bytes"
        ));
    }
    Ok(body)
}

/// The inbox rules a storage node applies to `offered` against the
/// versions it holds (head first). Sequence numbers are judged by the
/// caller, with concurrent versions refused.
pub fn judge(held: &[Record], offered: &Record) -> Result<(), String> {
    let body = check_version(offered)?;
    let by_owner = inbox_of(offered) == Some(&offered.owner[..]);
    if by_owner {
        return Ok(());
    }
    let before = match held.first() {
        Some(h) => match h.value.as_deref().and_then(InboxBody::decode) {
            Some(b) => b,
            None => return Err("the held inbox is malformed".into()),
        },
        None => InboxBody::default(),
    };
    let n = before.entries.len();
    if body.entries.len() != n + 1 || body.entries[..n] != before.entries[..] {
        return Err(
            "only the inbox's owner may remove or change entries: others append exactly one".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn version(signer: &SigningKey, owner: &[u8; 32], seq: u64, entries: &[&[u8]]) -> Record {
        let body = InboxBody {
            entries: entries.iter().map(|e| Entry(e.to_vec())).collect(),
        };
        Record::sign(signer, &record_name(owner), seq, Some(body.encode()))
    }

    #[test]
    fn anyone_appends_only_the_owner_removes() {
        let bob = SigningKey::from_bytes(&[1; 32]);
        let owner = bob.verifying_key().to_bytes();
        let (x, y) = (
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let v1 = version(&x, &owner, 1, &[b"a"]);
        assert_eq!(v1.key(), crate::record::inbox_key(&owner));
        assert_eq!(v1.verify(), Ok(()));
        assert!(judge(&[], &v1).is_ok());
        let held = [v1.clone()];
        // Another sender appends one.
        assert!(judge(&held, &version(&y, &owner, 2, &[b"a", b"b"])).is_ok());
        // Removing, changing, appending two, or an empty value: refused.
        for bad in [
            version(&y, &owner, 2, &[]),
            version(&y, &owner, 2, &[b"z"]),
            version(&y, &owner, 2, &[b"z", b"b"]),
            version(&y, &owner, 2, &[b"a", b"b", b"c"]),
            Record::sign(&y, &record_name(&owner), 2, None),
            Record::sign(&y, &record_name(&owner), 2, Some(vec![9, 9])),
        ] {
            assert!(judge(&held, &bad).is_err(), "{bad:?}");
        }
        // The owner may remove.
        assert!(judge(&held, &version(&bob, &owner, 2, &[])).is_ok());
        // Bounds.
        let big = vec![0u8; MAX_INBOX_ENTRY + 1];
        assert!(judge(&[], &version(&x, &owner, 1, &[&big])).is_err());
        let full: Vec<&[u8]> = vec![b"e"; MAX_INBOX_ENTRIES];
        let full_v = version(&x, &owner, 1, &full);
        assert!(judge(&[], &full_v).is_err());
        let almost = version(&x, &owner, 1, &full[..MAX_INBOX_ENTRIES - 1]);
        assert!(
            judge(&[], &almost).is_err(),
            "a sender appends one at a time"
        );
        let mut more = full[..MAX_INBOX_ENTRIES - 1].to_vec();
        let held = [version(&bob, &owner, 5, &more)];
        more.push(b"last");
        assert!(judge(&held, &version(&x, &owner, 6, &more)).is_ok());
        more.push(b"past the bound");
        let err = judge(&held, &version(&x, &owner, 6, &more)).unwrap_err();
        assert!(err.contains("full"), "{err}");
    }
}

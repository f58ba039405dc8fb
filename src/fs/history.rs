//! A file's kept versions, and its place in the trash.
//!
//! Every save that changes a file's content over a version another save
//! made (another `open`, another machine) keeps that version: its record
//! plaintext is sealed again under the file's key as a **version block**
//! (`seal(file key, tag ‖ plaintext, aad = "peerstore version v1" ‖
//! record name)`, so no storage node can link it to the record it came
//! from), and the new version's [`History`] lists it first. A record lists
//! at most [`KEPT_IN_RECORD`] kept versions, newest first; the oldest one
//! listed is itself a record plaintext whose history lists the ones before
//! it, so the whole chain is reachable from the current record in one
//! fetch per [`KEPT_IN_RECORD`] versions. The blocks a kept version refers
//! to are not released when it is replaced: the owner's orphan check
//! ([`crate::node::orphans`]) frees them once no version within the
//! retention period and no file in the trash refers to them.
//!
//! The history rides after the stored object in the record's plaintext
//! (`postcard(StoredObject) ‖ postcard(History)`); a record without one
//! (written before versions existed) has version 1 and none kept.

use super::FsError;
use super::crypto::{open, seal};
use super::object::{Link, Time};
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Kept versions listed in a record (the rest hang off the oldest listed).
pub const KEPT_IN_RECORD: usize = 16;
/// Associated-data prefix of a version block.
const VERSION_AAD: &[u8] = b"peerstore version v1";
/// First byte of a kept plaintext: the record format it is in.
pub const TAG_V2: u8 = 2;
/// A kept format v1 record plaintext (the release before v2).
pub const TAG_V1: u8 = 1;

/// How long replaced versions and deleted files are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A file version's place in its history (stored with the version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// This version's number: one more than the version it replaced when
    /// that one was kept (0 in a record that predates versions: read as 1).
    pub number: u64,
    /// The machine whose save made this content (its host label).
    pub machine: String,
    /// When that save happened (that machine's clock).
    pub saved: Time,
    /// Versions kept, newest first, at most [`KEPT_IN_RECORD`].
    pub kept: Vec<Kept>,
    /// The trash entry this file is listed under, while it is deleted (its
    /// name: restoring or emptying acts only on a file still marked so).
    pub trashed: Option<Vec<u8>>,
}

/// A replaced version, kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub number: u64,
    pub machine: String,
    /// When it was saved.
    pub saved: Time,
    /// When it was replaced: retention counts from here.
    pub replaced: Time,
    /// Its length in bytes.
    pub size: u64,
    /// The version block holding its record plaintext.
    pub block: Id,
}

/// One version of a file, as listed for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: u64,
    /// When it was saved (RFC 3339, UTC).
    pub time: String,
    pub size: u64,
    pub machine: String,
    /// Whether this is the file's content now.
    pub current: bool,
}

impl History {
    /// This version's number (1 for a record that predates versions).
    pub fn number(&self) -> u64 {
        self.number.max(1)
    }

    /// The history of a save that changed the content of the version this
    /// one describes (`size` bytes long). With `kept` (that version's
    /// block), the version is kept and the new one numbered after it;
    /// without, the save replaces a version its own session made, which
    /// keeps its number. Versions replaced before `cutoff` are dropped.
    pub fn after_save(
        &self,
        kept: Option<(Id, u64)>,
        machine: &str,
        now: Time,
        cutoff: Time,
    ) -> History {
        let mut next = History {
            number: self.number(),
            machine: machine.to_string(),
            saved: now,
            kept: self.kept.clone(),
            trashed: self.trashed.clone(),
        };
        if let Some((block, size)) = kept {
            next.number = self.number() + 1;
            next.kept.insert(
                0,
                Kept {
                    number: self.number(),
                    machine: self.machine.clone(),
                    saved: self.saved,
                    replaced: now,
                    size,
                    block,
                },
            );
        }
        next.kept.retain(|k| k.replaced >= cutoff);
        next.kept.truncate(KEPT_IN_RECORD);
        next
    }
}

/// The earliest replacement time a version may have and still be kept,
/// `retention` before now.
pub fn cutoff(retention: Duration) -> Time {
    let now = Time::now();
    Time {
        secs: now
            .secs
            .saturating_sub(retention.as_secs().min(i64::MAX as u64) as i64),
        nanos: now.nanos,
    }
}

/// Associated data of a version block of the file named `name`.
fn version_aad(name: &[u8]) -> Vec<u8> {
    [VERSION_AAD, name].concat()
}

/// A version block of file `link`: its tagged record plaintext, sealed.
pub fn seal_version(link: &Link, tagged: &[u8]) -> Vec<u8> {
    seal(&link.key, tagged, &version_aad(&link.name))
}

/// Opens a version block of file `link`: the tagged record plaintext.
pub fn open_version(link: &Link, sealed: &[u8]) -> Result<Vec<u8>, FsError> {
    let plain = open(&link.key, sealed, &version_aad(&link.name))
        .map_err(|e| FsError::Corrupt(format!("version block: {e}")))?;
    match plain.first() {
        Some(&TAG_V1) | Some(&TAG_V2) => Ok(plain),
        _ => Err(FsError::Corrupt("version block of no known format".into())),
    }
}

/// A time as users read it: `2026-12-04T01:02:03Z`.
pub fn show_time(t: Time) -> String {
    t.timestamp().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses a retention period: `30d`, `12h`, `15m`, `90s` or `0`.
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, e.g. 30d, 12h, 15m, 90s or 0"))?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?}: the unit is d, h, m or s (e.g. 30d)"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::object::Kind;

    fn at(secs: i64) -> Time {
        Time { secs, nanos: 0 }
    }

    #[test]
    fn a_kept_save_numbers_the_next_version_and_lists_the_old_one_first() {
        let h0 = History::default();
        assert_eq!(h0.number(), 1);
        let h1 = h0.after_save(Some((Id([1; 32]), 10)), "a", at(100), at(0));
        assert_eq!(h1.number, 2);
        assert_eq!(h1.kept.len(), 1);
        assert_eq!(h1.kept[0].number, 1);
        assert_eq!(h1.kept[0].size, 10);
        // A save of the same session keeps no version.
        let h1b = h1.after_save(None, "a", at(101), at(0));
        assert_eq!((h1b.number, h1b.kept.len()), (2, 1));
        // The list is bounded; the newest stay.
        let mut h = h1b;
        for i in 0..40u8 {
            h = h.after_save(Some((Id([i; 32]), 1)), "b", at(200 + i as i64), at(0));
        }
        assert_eq!(h.kept.len(), KEPT_IN_RECORD);
        assert_eq!(h.number, 42);
        assert_eq!(h.kept[0].number, 41);
        // Versions replaced before the cutoff go.
        let trimmed = h.after_save(None, "b", at(300), at(235));
        assert!(trimmed.kept.iter().all(|k| k.replaced >= at(235)));
        assert_eq!(trimmed.kept.len(), 5);
    }

    #[test]
    fn version_blocks_open_only_for_their_file() {
        let (a, b) = (Link::fresh(Kind::File), Link::fresh(Kind::File));
        let sealed = seal_version(&a, &[TAG_V2, 1, 2, 3]);
        assert_eq!(open_version(&a, &sealed).unwrap(), vec![TAG_V2, 1, 2, 3]);
        assert!(open_version(&b, &sealed).is_err());
        assert!(open_version(&a, &seal_version(&a, &[9, 9])).is_err());
    }

    #[test]
    fn retention_periods_parse() {
        assert_eq!(parse_retention("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_retention("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_retention("0").unwrap(), Duration::ZERO);
        assert!(parse_retention("3w").is_err());
        assert!(parse_retention("d").is_err());
        assert!(parse_retention("").is_err());
    }
}

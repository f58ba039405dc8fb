//! When two writers changed one file from the same version: which bytes
//! each changed, whether the changes collide, and the name of the
//! conflict copy that keeps the losing side's content.
//!
//! A writer that loses a compare-and-swap race compares the version it
//! started from (its *base*) with the version that won. If the bytes the
//! winner changed and the bytes this writer changed are disjoint, the
//! changes are merged (laid over the winner's version). If they overlap
//! (two appends at the same end, two whole-file saves, a truncate against
//! a write), neither may silently win: the winner keeps the name and this
//! writer's content is saved next to it as
//! `NAME.conflict-<machine>-<UTC time>.EXT`. No clock is compared, only
//! versions; the time in the name is a label for the user.

use super::object::{FileContent, MAX_NAME};
use std::collections::BTreeMap;

/// A set of byte ranges `[start, end)`, coalesced and in order; an end of
/// `u64::MAX` means "and everything past the start" (a length change).
/// Adding a range costs O(log n + ranges it absorbs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans(BTreeMap<u64, u64>);

impl Spans {
    /// Adds `[start, end)`, merging with the ranges it overlaps or touches.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // The range starting at or before `start` may reach it.
        if let Some((&a, &b)) = self.0.range(..=s).next_back()
            && b >= s
        {
            s = a;
            e = e.max(b);
        }
        // Ranges starting inside `[s, e]` are absorbed.
        let inside: Vec<u64> = self.0.range(s..=e).map(|(&a, _)| a).collect();
        for a in inside {
            if let Some(b) = self.0.remove(&a) {
                e = e.max(b);
            }
        }
        self.0.insert(s, e);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some byte is in both sets.
    pub fn overlaps(&self, other: &Spans) -> bool {
        let (small, big) = if self.0.len() <= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.iter().any(|(s, e)| big.meets(s, e))
    }

    /// Whether some range meets `[s, e)`.
    fn meets(&self, s: u64, e: u64) -> bool {
        let before = self.0.range(..=s).next_back().is_some_and(|(_, &b)| b > s);
        before || self.0.range(s..e).next().is_some()
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(&a, &b)| (a, b))
    }
}

/// The bytes a file of `b_size` bytes with content `b` may read
/// differently from one of `a_size` bytes with content `a`. It may name
/// more than changed (a journal piece moved into a block), never less.
pub fn content_changes(a: &FileContent, a_size: u64, b: &FileContent, b_size: u64) -> Spans {
    let mut out = Spans::default();
    if a_size != b_size {
        out.add(a_size.min(b_size), u64::MAX);
    }
    match (&a.inline, &b.inline) {
        (Some(x), Some(y)) => {
            let mut run: Option<u64> = None;
            let n = x.len().min(y.len());
            for i in 0..n {
                match (x[i] != y[i], run) {
                    (true, None) => run = Some(i as u64),
                    (false, Some(s)) => {
                        out.add(s, i as u64);
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                out.add(s, n as u64);
            }
            if x.len() != y.len() {
                out.add(n as u64, u64::MAX);
            }
        }
        (None, None) => {
            for (s, e) in a.extents.differences(&b.extents) {
                out.add(s, e);
            }
            let same = |r: &super::ranges::Ranges, o: u64, d: &[u8]| r.iter().any(|p| p == (o, d));
            for (o, d) in b.journal.iter() {
                if !same(&a.journal, o, d) {
                    out.add(o, o + d.len() as u64);
                }
            }
            for (o, d) in a.journal.iter() {
                if !same(&b.journal, o, d) {
                    out.add(o, o + d.len() as u64);
                }
            }
        }
        // One kept its bytes in the record, the other in blocks: the
        // whole file is taken as changed (rare: a file crossing the
        // inline size on one side).
        _ => out.add(0, u64::MAX),
    }
    out
}

/// The name of a conflict copy of `name`, made on `machine` at `at`:
/// `stem.conflict-<machine>-<YYYYMMDD-HHMMSS>[-n].ext`, where `.ext` is
/// the last extension (none for a name without a dot, or a dot only in
/// front), and `n` tells apart copies made in the same second. The stem is
/// shortened if the whole would pass the longest name.
pub fn conflict_name(name: &[u8], machine: &str, at: jiff::Timestamp, n: u32) -> Vec<u8> {
    let dot = name.iter().rposition(|&c| c == b'.').filter(|&i| i > 0);
    let (stem, ext) = match dot {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, &b""[..]),
    };
    let mut tag = format!(".conflict-{machine}-{}", at.strftime("%Y%m%d-%H%M%S"));
    if n > 1 {
        tag.push_str(&format!("-{n}"));
    }
    let room = MAX_NAME.saturating_sub(tag.len() + ext.len());
    let mut stem = &stem[..stem.len().min(room)];
    // Do not cut a UTF-8 character in two.
    let utf8 = std::str::from_utf8(name).is_ok();
    while utf8 && std::str::from_utf8(stem).is_err() {
        stem = &stem[..stem.len() - 1];
    }
    let ext = &ext[..ext.len().min(MAX_NAME.saturating_sub(tag.len()))];
    let mut out = Vec::with_capacity(stem.len() + tag.len() + ext.len());
    out.extend_from_slice(stem);
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(ext);
    out
}

/// A label for this machine in conflict copies' names: the host name,
/// with anything but letters, digits and `-` dropped.
pub fn host_label() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let clean: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    if clean.is_empty() {
        "machine".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::ranges::Ranges;

    fn spans(v: &[(u64, u64)]) -> Spans {
        let mut s = Spans::default();
        for &(a, b) in v {
            s.add(a, b);
        }
        s
    }

    #[test]
    fn spans_coalesce_and_test_overlap() {
        let s = spans(&[(10, 20), (30, 40), (20, 25)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 25), (30, 40)]);
        assert!(s.overlaps(&spans(&[(24, 26)])));
        assert!(!s.overlaps(&spans(&[(25, 30), (40, 50)])));
        assert!(s.overlaps(&spans(&[(0, 5), (35, u64::MAX)])));
        assert!(!Spans::default().overlaps(&s));
    }

    proptest::proptest! {
        /// Spans cover exactly the bytes added, stay coalesced, and meet
        /// another set exactly where a byte map says they do.
        #[test]
        fn spans_match_a_byte_map(
            adds in proptest::collection::vec((0u64..200, 0u64..40), 0..40),
            probe in proptest::collection::vec((0u64..200, 0u64..40), 0..5),
        ) {
            let mut s = Spans::default();
            let mut bytes = [false; 240];
            for &(a, n) in &adds {
                s.add(a, a + n);
                for b in &mut bytes[a as usize..(a + n) as usize] {
                    *b = true;
                }
            }
            let mut covered = [false; 240];
            let mut last_end = None;
            for (a, b) in s.iter() {
                proptest::prop_assert!(a < b);
                proptest::prop_assert!(last_end.is_none_or(|e| e < a), "not coalesced");
                last_end = Some(b);
                for c in &mut covered[a as usize..b as usize] {
                    *c = true;
                }
            }
            proptest::prop_assert_eq!(covered, bytes);
            let p = spans(&probe.iter().map(|&(a, n)| (a, a + n)).collect::<Vec<_>>());
            let naive = probe
                .iter()
                .any(|&(a, n)| bytes[a as usize..(a + n) as usize].iter().any(|&b| b));
            proptest::prop_assert_eq!(s.overlaps(&p), naive);
            proptest::prop_assert_eq!(p.overlaps(&s), naive);
        }
    }

    fn inline(b: &[u8]) -> FileContent {
        FileContent {
            inline: Some(b.to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn two_appends_to_one_end_collide_and_edits_far_apart_do_not() {
        let base = inline(b"line 1\n");
        let a = inline(b"line 1\nfrom a\n");
        let changed = content_changes(&base, 7, &a, 14);
        // The other writer appended at the same end.
        assert!(changed.overlaps(&spans(&[(7, 14)])));
        // An edit of the first byte does not touch the append.
        let edit = inline(b"Line 1\n");
        let theirs = content_changes(&base, 7, &edit, 7);
        assert_eq!(theirs.iter().collect::<Vec<_>>(), vec![(0, 1)]);
        assert!(!theirs.overlaps(&spans(&[(7, 14)])));
        assert!(content_changes(&base, 7, &base.clone(), 7).is_empty());
    }

    #[test]
    fn journal_changes_are_named() {
        let a = FileContent {
            journal: Ranges::from_pieces(vec![(100, b"abc".to_vec())]).unwrap(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.journal.add(500, b"xyz");
        let c = content_changes(&a, 1000, &b, 1000);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(500, 503)]);
        // Inline on one side only: everything.
        let c = content_changes(&a, 1000, &inline(b"x"), 1);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(0, u64::MAX)]);
    }

    #[test]
    fn conflict_names_keep_the_extension_and_fit() {
        let at: jiff::Timestamp = "2026-12-03T14:05:09Z".parse().unwrap();
        assert_eq!(
            conflict_name(b"report.txt", "laptop", at, 1),
            b"report.conflict-laptop-20261203-140509.txt".to_vec()
        );
        assert_eq!(
            conflict_name(b"Makefile", "laptop", at, 2),
            b"Makefile.conflict-laptop-20261203-140509-2".to_vec()
        );
        assert_eq!(
            conflict_name(b".bashrc", "pc", at, 1),
            b".bashrc.conflict-pc-20261203-140509".to_vec()
        );
        let long = "é".repeat(120);
        let n = conflict_name(long.as_bytes(), "pc", at, 1);
        assert!(n.len() <= MAX_NAME);
        assert!(std::str::from_utf8(&n).is_ok());
    }
}

//! Unit tests of the record cache and its log.

use super::segment_log::*;
use super::*;
use crate::clock::Clock;
use rand::{Rng, RngCore, SeedableRng};
use std::io::Write;
use std::path::PathBuf;

fn rec(name: &[u8], seq: u64, value: &[u8]) -> Record {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    Record::sign(&sk, name, seq, Some(value.to_vec()))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| segment_number(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn append_raw(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// A small log: 4 KiB segments, compacted past 8 KiB of dead bytes.
fn open_small(dir: &Path, capacity: u64) -> RecordCache {
    let limits = Limits {
        segment_bytes: 4 << 10,
        compact_dead_bytes: 8 << 10,
    };
    RecordCache::open_with(dir, capacity, limits).unwrap()
}

#[test]
fn kept_versions_survive_a_reopen_and_forged_ones_are_dropped() {
    let d = tempfile::tempdir().unwrap();
    let r = rec(b"a", 3, b"three");
    {
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        c.put(r.key(), std::slice::from_ref(&r));
        assert_eq!(c.get(r.key()), vec![r.clone()]);
    }
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    assert_eq!(c.get(r.key()), vec![r.clone()]);
    drop(c);
    // A planted frame under another record's key does not verify.
    let other = rec(b"b", 1, b"x");
    let forged = encode_frame(
        other.key(),
        &encode_versions(std::slice::from_ref(&r)).unwrap(),
    );
    append_raw(segments(d.path()).last().unwrap(), &forged);
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    assert!(c.bytes() > 0);
    let before = c.bytes();
    assert!(c.get(other.key()).is_empty());
    assert_eq!(c.bytes(), before - forged.len() as u64);
    assert_eq!(c.get(r.key()), vec![r]);
}

#[test]
fn a_written_version_replaces_what_it_is_above_and_keeps_concurrent_ones() {
    let d = tempfile::tempdir().unwrap();
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let base = Clock::default().next(1);
    let v1 = Record::sign_clocked(&sk, b"f", 1, base.clone(), Some(b"1".to_vec()));
    c.put(v1.key(), std::slice::from_ref(&v1));
    let mine = Record::sign_clocked(&sk, b"f", 2, base.next(1), Some(b"mine".to_vec()));
    c.note_written(&mine);
    assert_eq!(c.get(v1.key()), vec![mine.clone()]);
    let theirs = Record::sign_clocked(&sk, b"f", 2, base.next(2), Some(b"theirs".to_vec()));
    c.note_written(&theirs);
    assert_eq!(c.get(v1.key()).len(), 2);
    // An older version changes nothing.
    c.note_written(&v1);
    assert_eq!(c.get(v1.key()).len(), 2);
}

#[test]
fn eviction_spares_pinned_records() {
    let d = tempfile::tempdir().unwrap();
    let keep = rec(b"keep", 1, &[1; 400]);
    let c = RecordCache::open(d.path(), 1500).unwrap();
    c.put(keep.key(), std::slice::from_ref(&keep));
    c.set_pinned([keep.key()].into_iter().collect());
    for i in 0..10u8 {
        let r = rec(&[b'x', i], 1, &[i; 400]);
        c.put(r.key(), std::slice::from_ref(&r));
    }
    assert!(c.bytes() <= 1500 + 600);
    assert_eq!(c.get(keep.key()), vec![keep.clone()]);
    // Evicted records stay evicted on reopen; the pinned one stays.
    drop(c);
    let c = RecordCache::open(d.path(), 1500).unwrap();
    assert!(c.bytes() <= 1500 + 600);
    assert_eq!(c.get(keep.key()), vec![keep]);
}

#[test]
fn a_reopen_keeps_entries_and_drops_forgotten_ones() {
    let d = tempfile::tempdir().unwrap();
    let kept: Vec<Record> = (0..20u8).map(|i| rec(&[b'k', i], 1, &[i; 100])).collect();
    {
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        for r in &kept {
            c.put(r.key(), std::slice::from_ref(r));
        }
        c.forget(kept[3].key());
        c.put(kept[5].key(), &[]);
        let newer = rec(&[b'k', 7], 2, b"seven");
        c.note_written(&newer);
    }
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    for (i, r) in kept.iter().enumerate() {
        let got = c.get(r.key());
        match i {
            3 | 5 => assert!(got.is_empty(), "{i} was forgotten"),
            7 => assert_eq!(got, vec![rec(&[b'k', 7], 2, b"seven")]),
            _ => assert_eq!(got, vec![r.clone()]),
        }
    }
}

#[test]
fn a_torn_tail_is_cut_and_later_appends_survive_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c3) = (rec(b"a", 1, b"a"), rec(b"b", 1, b"b"), rec(b"c", 1, b"c"));
    {
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        c.put(a.key(), std::slice::from_ref(&a));
        c.put(b.key(), std::slice::from_ref(&b));
    }
    let seg = segments(d.path()).pop().unwrap();
    let good = fs::metadata(&seg).unwrap().len();
    let frame = encode_frame(
        c3.key(),
        &encode_versions(std::slice::from_ref(&c3)).unwrap(),
    );
    append_raw(&seg, &frame[..frame.len() - 7]);
    {
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        assert!(c.get(c3.key()).is_empty());
        assert_eq!(c.get(a.key()), vec![a.clone()]);
        c.put(c3.key(), std::slice::from_ref(&c3));
    }
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    assert_eq!(c.get(a.key()), vec![a]);
    assert_eq!(c.get(b.key()), vec![b]);
    assert_eq!(c.get(c3.key()), vec![c3]);
}

#[test]
fn garbage_in_segments_never_panics() {
    let d = tempfile::tempdir().unwrap();
    let recs: Vec<Record> = (0..8u8).map(|i| rec(&[b'g', i], 1, &[i; 50])).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        {
            let c = RecordCache::open(d.path(), 1 << 20).unwrap();
            for r in &recs {
                let _ = c.get(r.key());
            }
            let r = &recs[round % recs.len()];
            c.put(r.key(), std::slice::from_ref(r));
            assert_eq!(c.get(r.key()), vec![r.clone()]);
        }
        let last = segments(d.path()).pop().unwrap();
        let mut junk = vec![0; rng.gen_range(0..200)];
        rng.fill_bytes(&mut junk);
        match round % 4 {
            // Random bytes, maybe a plausible length.
            0 => append_raw(&last, &junk),
            1 => {
                junk.splice(0..0, [5, 0, 0, 0]);
                append_raw(&last, &junk);
            }
            // A well-formed frame of junk under a kept key.
            2 => append_raw(&last, &encode_frame(recs[rng.gen_range(0..8)].key(), &junk)),
            // A whole segment of junk, newer than the rest.
            _ => fs::write(segment_path(d.path(), 1000 + round as u64), &junk).unwrap(),
        }
    }
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    for r in &recs {
        let got = c.get(r.key());
        assert!(got.is_empty() || got == vec![r.clone()]);
    }
}

#[test]
fn compaction_deletes_old_segments_and_keeps_live_entries() {
    let d = tempfile::tempdir().unwrap();
    let gone = rec(b"gone", 1, &[0; 100]);
    let mut latest: Vec<Record> = Vec::new();
    {
        let c = open_small(d.path(), 1 << 20);
        c.put(gone.key(), std::slice::from_ref(&gone));
        for seq in 1..=300u64 {
            latest = (0..5u8)
                .map(|k| rec(&[b'c', k], seq, &[seq as u8; 200]))
                .collect();
            for r in &latest {
                c.note_written(r);
            }
            if seq == 2 {
                c.forget(gone.key());
            }
        }
        // About 300 KiB written, 1.5 KiB live.
        assert!(segments(d.path()).len() <= 8, "{:?}", segments(d.path()));
        let first = segment_number(&segments(d.path())[0].file_name().unwrap().to_string_lossy());
        assert!(first.unwrap() > 1);
        for r in &latest {
            assert_eq!(c.get(r.key()), vec![r.clone()]);
        }
    }
    let c = open_small(d.path(), 1 << 20);
    for r in &latest {
        assert_eq!(c.get(r.key()), vec![r.clone()]);
    }
    assert!(c.get(gone.key()).is_empty());
    assert_eq!(
        c.bytes(),
        latest
            .iter()
            .map(|r| HEADER + encode_versions(std::slice::from_ref(r)).unwrap().len() as u64)
            .sum::<u64>()
    );
}

#[test]
fn eviction_and_compaction_keep_pinned_records_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let keep = rec(b"keep", 1, &[1; 300]);
    {
        let c = open_small(d.path(), 3000);
        c.put(keep.key(), std::slice::from_ref(&keep));
        c.set_pinned([keep.key()].into_iter().collect());
        for i in 0..500u32 {
            let r = rec(&i.to_le_bytes(), 1, &[3; 300]);
            c.put(r.key(), std::slice::from_ref(&r));
        }
        assert!(segments(d.path()).len() <= 8);
    }
    let c = open_small(d.path(), 3000);
    assert_eq!(c.get(keep.key()), vec![keep]);
    assert!(c.bytes() <= 3000 + 400);
}

#[test]
fn the_old_layout_is_imported() {
    let d = tempfile::tempdir().unwrap();
    let r = rec(b"old", 4, b"from the file-per-record days");
    let forged = rec(b"forged", 1, b"x");
    for (key, bytes) in [
        (r.key(), encode_versions(std::slice::from_ref(&r)).unwrap()),
        (
            forged.key(),
            encode_versions(std::slice::from_ref(&r)).unwrap(),
        ),
    ] {
        let hex = key.to_hex();
        fs::create_dir_all(d.path().join(&hex[..2])).unwrap();
        fs::write(d.path().join(&hex[..2]).join(&hex), bytes).unwrap();
    }
    fs::create_dir_all(d.path().join("tmp")).unwrap();
    fs::write(d.path().join("tmp").join("half-written"), b"x").unwrap();
    {
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        assert_eq!(c.get(r.key()), vec![r.clone()]);
        assert!(c.get(forged.key()).is_empty());
    }
    let left: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| segment_number(n).is_some()), "{left:?}");
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    assert_eq!(c.get(r.key()), vec![r]);
    assert!(c.get(forged.key()).is_empty());
}

#[test]
fn recent_versions_are_served_only_while_the_log_holds_them() {
    let d = tempfile::tempdir().unwrap();
    let c = RecordCache::open(d.path(), 1 << 20).unwrap();
    let v1 = rec(b"r", 1, b"one");
    let v2 = rec(b"r", 2, b"two");
    c.put(v1.key(), std::slice::from_ref(&v1));
    c.put(v2.key(), std::slice::from_ref(&v2));
    assert_eq!(c.get(v1.key()), vec![v2.clone()]);
    c.forget(v1.key());
    assert!(c.get(v1.key()).is_empty());
    c.put(v1.key(), std::slice::from_ref(&v1));
    assert_eq!(c.get(v1.key()), vec![v1]);
}

/// `cargo test --release --lib cache::records::tests::time_note_written -- --ignored --nocapture`
#[test]
#[ignore]
fn time_note_written() {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let recs: Vec<Record> = (0..20_000u64)
        .map(|i| {
            Record::sign(
                &sk,
                format!("dir-{}", i % 200).as_bytes(),
                i / 200 + 1,
                Some(vec![7; 200]),
            )
        })
        .collect();
    let size = encode_versions(&recs[..1]).unwrap().len();
    for pass in [
        "cold (signatures checked)",
        "warm (signatures checked before)",
    ] {
        let d = tempfile::tempdir().unwrap();
        let c = RecordCache::open(d.path(), DEFAULT_RECORD_CACHE_BYTES).unwrap();
        let t = std::time::Instant::now();
        for r in &recs {
            c.note_written(r);
        }
        println!(
            "{pass}: 20000 note_written of {size}-byte records over 200 keys: {:?}",
            t.elapsed()
        );
        // Each key holds its last version, the one that replaced the rest.
        for r in &recs[recs.len() - 200..] {
            assert_eq!(c.get(r.key()), vec![r.clone()]);
        }
    }
}

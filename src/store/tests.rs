//! Tests of the store against a real temporary directory.

use super::*;
use crate::record::{Record, RecordError};
use ed25519_dalek::SigningKey;
use std::fs;
use std::sync::Arc;

fn signer(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn rec(seq: u64, value: &[u8]) -> Record {
    Record::sign(&signer(1), b"dir", seq, Some(value.to_vec()))
}

fn block(n: u32) -> (Id, Vec<u8>) {
    let data = format!("block number {n}").into_bytes();
    (Id::hash(&data), data)
}

/// Every item file under `kind_dir`, as (key, size).
fn files_on_disk(root: &Path, kind_dir: &str) -> Vec<(Id, u64)> {
    let mut out = Vec::new();
    for sub in fs::read_dir(root.join(kind_dir)).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let key = f.file_name().to_str().unwrap().parse().unwrap();
            out.push((key, f.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn block_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (key, data) = block(1);
    let claim = Claim::sign(&signer(1), key, 10);
    let claims = std::slice::from_ref(&claim);
    assert_eq!(store.get_block(key), Ok(None));
    assert_eq!(store.put_block(key, &data, claims), Ok(true));
    assert_eq!(store.get_block(key), Ok(Some(data.clone())));
    assert_eq!(store.put_block(key, &data, claims), Ok(false));
    assert_eq!(store.version(key), Some(ItemVersion::Block));
    let file = block_file::encode(claims, &data);
    assert_eq!(
        store.stats(),
        StoreStats {
            blocks: 1,
            records: 0,
            bytes: file.len() as u64
        }
    );
    // A small block is packed, not kept in a file of its own.
    assert_eq!(store.read_item(Kind::Block, key), Ok(Some(file)));
    assert!(store.packs.holds(Kind::Block, key));
    assert!(files_on_disk(dir.path(), "blocks").is_empty());
}

#[test]
fn blocks_are_freed_only_by_their_owners_releases() {
    let dir = tempfile::tempdir().unwrap();
    // Release times count: ones older than the kept period are forgotten.
    let t = now_ms();
    let (a, b) = (signer(1), signer(2));
    let (owner_a, owner_b) = (a.verifying_key().to_bytes(), b.verifying_key().to_bytes());
    let (k1, d1) = block(1);
    let (k2, d2) = block(2);
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put_block(k1, &d1, &[Claim::sign(&a, k1, t + 10)])
            .unwrap();
        store
            .put_block(k2, &d2, &[Claim::sign(&a, k2, t + 10)])
            .unwrap();
        // A second owner of the same bytes: charged too.
        assert_eq!(
            store.put_block(k2, &d2, &[Claim::sign(&b, k2, t + 10)]),
            Ok(true)
        );
        let len1 = block_file::encode(&[Claim::sign(&a, k1, t + 10)], &d1).len() as u64;
        assert!(store.usage(&owner_a) > len1);
        assert!(store.usage(&owner_b) > 0);
        assert_eq!(store.owned(&owner_a, None, 10).len(), 2);
        assert_eq!(store.owned(&owner_a, Some(k1.min(k2)), 10).len(), 1);
        // A forged claim or release is refused.
        let mut forged = Claim::sign(&b, k1, t + 20);
        forged.owner = owner_a;
        assert!(matches!(
            store.put_block(k1, &d1, &[forged]),
            Err(StoreError::BadClaim(_))
        ));
        let mut bad = Release::sign(&b, vec![k1], t + 20);
        bad.owner = owner_a;
        assert!(matches!(store.release(&bad), Err(StoreError::BadClaim(_))));
        assert!(store.get_block(k1).unwrap().is_some());
        // B's release leaves A's claim on the block; A's frees it.
        let f = store
            .release(&Release::sign(&b, vec![k1, k2], t + 20))
            .unwrap();
        assert_eq!(f.blocks, 0);
        assert_eq!(store.usage(&owner_b), 0);
        let f = store
            .release(&Release::sign(&a, vec![k1, k2], t + 20))
            .unwrap();
        assert_eq!(f.blocks, 2);
        assert_eq!(store.get_block(k1), Ok(None));
        assert_eq!(store.usage(&owner_a), 0);
        assert_eq!(store.stats().blocks, 0);
        // A copy offered back (repair from a replica that missed the
        // release) is refused with the release; a newer claim is not.
        assert!(matches!(
            store.put_block(k1, &d1, &[Claim::sign(&a, k1, t + 10)]),
            Err(StoreError::Released(r)) if r.keys.contains(&k1)
        ));
        assert_eq!(
            store.put_block(k2, &d2, &[Claim::sign(&a, k2, t + 30)]),
            Ok(true)
        );
    }
    // Claims and releases survive a restart.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.owned(&owner_a, None, 10).len(), 1);
    assert!(store.usage(&owner_a) > 0);
    assert!(matches!(
        store.put_block(k1, &d1, &[Claim::sign(&a, k1, t + 10)]),
        Err(StoreError::Released(_))
    ));
}

#[test]
fn bad_blocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (key, _) = block(1);
    assert_eq!(
        store.put_block(key, b"other bytes", &[]),
        Err(StoreError::BadHash)
    );
    let big = vec![7u8; MAX_BLOCK + 1];
    assert_eq!(
        store.put_block(Id::hash(&big), &big, &[]),
        Err(StoreError::TooLarge(MAX_BLOCK + 1))
    );
    let max = vec![7u8; MAX_BLOCK];
    assert_eq!(store.put_block(Id::hash(&max), &max, &[]), Ok(true));
    assert_eq!(store.stats().blocks, 1);
}

#[test]
fn corrupt_block_is_detected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (key, data) = block(1);
    let (other, other_data) = block(2);
    store.put_block(key, &data, &[]).unwrap();
    store.put_block(other, &other_data, &[]).unwrap();
    store.packs.damage(Kind::Block, key);
    assert_eq!(store.get_block(key), Err(StoreError::Corrupt(key)));
    assert!(!store.packs.holds(Kind::Block, key));
    assert_eq!(store.version(key), None);
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(
        store.stats().bytes,
        block_file::encode(&[], &other_data).len() as u64
    );
    assert_eq!(store.get_block(key), Ok(None));
    // Repair from a replica works.
    assert_eq!(store.put_block(key, &data, &[]), Ok(true));
    assert_eq!(store.get_block(key), Ok(Some(data)));
    assert_eq!(store.stats().blocks, 2);
}

#[test]
fn corrupt_record_is_detected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = rec(1, b"v1");
    store.put_record(&r, None).unwrap();
    store.packs.damage(Kind::Record, r.key());
    assert_eq!(store.get_record(r.key()), Err(StoreError::Corrupt(r.key())));
    assert!(!store.packs.holds(Kind::Record, r.key()));
    assert_eq!(store.stats(), StoreStats::default());
    assert_eq!(store.put_record(&r, None), Ok(true));
    assert_eq!(store.get_record(r.key()), Ok(Some(r)));
}

#[test]
fn a_corrupt_record_file_from_before_packs_is_detected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let r = rec(1, b"v1");
    let path = Store::path_in(dir.path(), Kind::Record, r.key());
    let store = Store::open(dir.path()).unwrap();
    // A valid record, but of another key, is as bad as garbage here.
    let foreign = Record::sign(&signer(2), b"dir", 1, None);
    fs::write(&path, postcard::to_stdvec(&foreign).unwrap()).unwrap();
    lock(&store.index).set_record(
        r.key(),
        RecordMeta {
            seq: 1,
            len: 10,
            owner: r.owner,
            versions: 1,
        },
    );
    assert_eq!(store.get_record(r.key()), Err(StoreError::Corrupt(r.key())));
    assert!(!path.exists());
    assert_eq!(store.stats(), StoreStats::default());
}

#[test]
fn record_versions_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r1 = rec(1, b"v1");
    let key = r1.key();
    assert_eq!(store.get_record(key), Ok(None));
    assert_eq!(store.put_record(&r1, None), Ok(true));
    assert_eq!(store.get_record(key), Ok(Some(r1.clone())));
    let r2 = rec(2, b"v2");
    assert_eq!(store.put_record(&r2, None), Ok(true));
    assert_eq!(store.version(key), Some(ItemVersion::Record(2)));
    // The identical copy is accepted as already held.
    assert_eq!(store.put_record(&r2, None), Ok(false));
    // An older seq is refused.
    assert_eq!(
        store.put_record(&r1, None),
        Err(StoreError::Stale {
            offered: 1,
            current: 2
        })
    );
    assert_eq!(store.get_record(key), Ok(Some(r2.clone())));
    // Same seq (and clock), other bytes: written concurrently, so both
    // are kept, in the order every node shows them, across a reopen.
    let other = rec(2, b"other");
    assert_eq!(store.put_record(&other, None), Ok(true));
    let mut both = vec![r2.clone(), other.clone()];
    crate::store::order_versions(&mut both);
    assert_eq!(store.get_versions(key), Ok(both.clone()));
    assert_eq!(store.version(key), Some(ItemVersion::record(2, 2)));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_versions(key), Ok(both));
    assert_eq!(store.version(key), Some(ItemVersion::record(2, 2)));
    // A forged version is refused.
    let mut forged = rec(9, b"evil");
    forged.value = Some(bytes::Bytes::from_static(b"EVIL"));
    assert_eq!(
        store.put_record(&forged, None),
        Err(StoreError::BadRecord(RecordError::BadSignature))
    );
    // A tombstone is a version like any other.
    let t = Record::sign(&signer(1), b"dir", 3, None);
    assert_eq!(store.put_record(&t, None), Ok(true));
    let got = store.get_record(key).unwrap().unwrap();
    assert!(got.is_tombstone());
    assert_eq!(got, t);
    assert_eq!(
        store.put_record(&r2, None),
        Err(StoreError::Stale {
            offered: 2,
            current: 3
        })
    );
    let len = postcard::to_stdvec(&t).unwrap().len() as u64;
    assert_eq!(
        store.stats(),
        StoreStats {
            blocks: 0,
            records: 1,
            bytes: len
        }
    );
}

#[test]
fn compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = rec(1, b"").key();
    assert_eq!(
        store.put_record(&rec(1, b"a"), Some(4)),
        Err(StoreError::Conflict { current: None })
    );
    assert_eq!(store.put_record(&rec(1, b"a"), Some(0)), Ok(true));
    assert_eq!(
        store.put_record(&rec(2, b"b"), Some(0)),
        Err(StoreError::Conflict { current: Some(1) })
    );
    assert_eq!(
        store.put_record(&rec(2, b"b"), Some(5)),
        Err(StoreError::Conflict { current: Some(1) })
    );
    assert_eq!(store.put_record(&rec(2, b"b"), Some(1)), Ok(true));
    // A retry of the same successful swap is idempotent.
    assert_eq!(store.put_record(&rec(2, b"b"), Some(1)), Ok(false));
    // A writer never leaves a concurrent version behind: a swap with
    // the matching expectation but no newer version is refused.
    assert_eq!(
        store.put_record(&rec(2, b"c"), Some(2)),
        Err(StoreError::Conflict { current: Some(2) })
    );
    assert_eq!(store.version(key), Some(ItemVersion::Record(2)));
}

#[test]
fn reopen_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (items, stats, r) = {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..20 {
            let (k, d) = block(n);
            store.put_block(k, &d, &[]).unwrap();
        }
        let r = rec(7, b"manifest");
        store.put_record(&r, None).unwrap();
        let t = Record::sign(&signer(3), b"gone", 2, None);
        store.put_record(&t, None).unwrap();
        (store.items(), store.stats(), r)
    };
    fs::write(dir.path().join("tmp").join("123-4-5.tmp"), b"half a write").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(store.items(), items);
    assert_eq!(store.stats(), stats);
    assert_eq!(stats.blocks, 20);
    assert_eq!(stats.records, 2);
    for n in 0..20 {
        let (k, d) = block(n);
        assert_eq!(store.get_block(k), Ok(Some(d)));
    }
    assert_eq!(store.get_record(r.key()), Ok(Some(r)));
    let keys: Vec<Id> = items.iter().map(|(k, _)| *k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn open_drops_bad_records_and_ignores_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let r = rec(1, b"x");
    let r2 = Record::sign(&signer(2), b"other", 1, None);
    let path = {
        let store = Store::open(dir.path()).unwrap();
        store.put_record(&r, None).unwrap();
        store.sync_pending().unwrap();
        store.packs.damage(Kind::Record, r.key());
        Store::path_in(dir.path(), Kind::Record, r2.key())
    };
    // A file from before packs that does not decode.
    fs::write(&path, b"\x01\x02garbage").unwrap();
    let stranger = dir.path().join("blocks").join("README");
    fs::write(&stranger, b"not a block").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!path.exists());
    assert!(stranger.exists());
    assert_eq!(store.stats(), StoreStats::default());
}

#[test]
fn missing_compares_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (held, d) = block(1);
    let (absent, _) = block(2);
    store.put_block(held, &d, &[]).unwrap();
    let r = rec(5, b"v");
    store.put_record(&r, None).unwrap();
    let other_record = rec(1, b"").key().pred();
    let asked = vec![
        (held, ItemVersion::Block),
        (absent, ItemVersion::Block),
        (r.key(), ItemVersion::Record(4)),
        (r.key(), ItemVersion::Record(5)),
        (r.key(), ItemVersion::Record(6)),
        (other_record, ItemVersion::Record(0)),
        (held, ItemVersion::Record(1)),
    ];
    assert_eq!(store.missing(&asked), vec![1, 4, 5, 6]);
}

#[test]
fn remove_drops_local_copies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (k, d) = block(1);
    store.put_block(k, &d, &[]).unwrap();
    let r = rec(1, b"v");
    store.put_record(&r, None).unwrap();
    store.remove(k).unwrap();
    store.remove(r.key()).unwrap();
    store.remove(Id::ZERO).unwrap();
    assert_eq!(store.stats(), StoreStats::default());
    assert!(store.items().is_empty());
    assert!(files_on_disk(dir.path(), "blocks").is_empty());
    assert!(files_on_disk(dir.path(), "records").is_empty());
    assert_eq!(store.get_block(k), Ok(None));
    assert_eq!(store.get_record(r.key()), Ok(None));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.items().is_empty(),
        "the removals are in the packs too"
    );
}

#[test]
fn block_and_record_may_share_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = rec(1, b"v");
    // A block whose bytes are owner ‖ name hashes to the record's key.
    let data = [&r.owner[..], &r.name[..]].concat();
    assert_eq!(Id::hash(&data), r.key());
    store.put_record(&r, None).unwrap();
    assert_eq!(store.put_block(r.key(), &data, &[]), Ok(true));
    assert_eq!(store.get_record(r.key()), Ok(Some(r.clone())));
    assert_eq!(store.get_block(r.key()), Ok(Some(data)));
    assert_eq!(
        store.items(),
        vec![
            (r.key(), ItemVersion::Block),
            (r.key(), ItemVersion::Record(1))
        ]
    );
    assert_eq!(store.version(r.key()), Some(ItemVersion::Record(1)));
}

#[test]
fn concurrent_puts_keep_index_and_disk_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 12;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let (k, d) = block((t * PER_THREAD + i) as u32);
                    assert_eq!(store.put_block(k, &d, &[]), Ok(true));
                    // Seqs 1..=THREADS*PER_THREAD, interleaved between threads.
                    let seq = i * THREADS + t + 1;
                    match store.put_record(&rec(seq, &seq.to_be_bytes()), None) {
                        Ok(true) | Err(StoreError::Stale { .. }) => {}
                        other => panic!("seq {seq}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let top = THREADS * PER_THREAD;
    let got = store.get_record(rec(1, b"").key()).unwrap().unwrap();
    assert_eq!(got, rec(top, &top.to_be_bytes()));
    let stats = store.stats();
    assert_eq!(stats.blocks, THREADS * PER_THREAD);
    assert_eq!(stats.records, 1);
    // The index matches the packs: every item is there, with its size.
    let mut packed_bytes = 0;
    for (key, v) in store.items() {
        let kind = if v == ItemVersion::Block {
            Kind::Block
        } else {
            Kind::Record
        };
        packed_bytes += store.packs.get(kind, key).unwrap().unwrap().len() as u64;
    }
    assert_eq!(packed_bytes, stats.bytes);
    assert!(files_on_disk(dir.path(), "blocks").is_empty());
    let items = store.items();
    drop(store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.items(), items);
    assert_eq!(reopened.stats(), stats);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn failed_write_reports_io_and_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r1 = rec(1, b"old");
    store.put_record(&r1, None).unwrap();
    let stats = store.stats();
    // Staging cannot work once tmp/ is a regular file (chmod would not stop
    // root, which the tests may run as).
    let tmp = dir.path().join("tmp");
    fs::remove_dir(&tmp).unwrap();
    fs::write(&tmp, b"in the way").unwrap();
    // A big block has a file of its own, staged in tmp/.
    let d = vec![3u8; packs::BLOCK_MAX + 1];
    let k = Id::hash(&d);
    let err = store.put_block(k, &d, &[]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io(m) if m.contains("tmp")),
        "{err}"
    );
    assert_eq!(store.get_block(k), Ok(None));
    assert_eq!(store.stats(), stats);
    assert_eq!(store.get_record(r1.key()), Ok(Some(r1.clone())));
    // Once the disk is usable again, so is the store.
    fs::remove_file(&tmp).unwrap();
    fs::create_dir(&tmp).unwrap();
    assert_eq!(store.put_block(k, &d, &[]), Ok(true));
    assert_eq!(store.get_block(k), Ok(Some(d)));
}

#[test]
fn open_fails_cleanly_on_a_bad_layout() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("records"), b"a file, not a directory").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io(m) if m.contains("records")),
        "{err}"
    );
}

#[test]
fn non_durable_writes_are_visible_then_synced() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let data = b"lazy block".to_vec();
    let key = Id::hash(&data);
    assert!(s.put_block_with(key, &data, &[], false).unwrap());
    assert_eq!(s.get_block(key).unwrap().unwrap(), data);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    let rec = crate::record::Record::sign(&sk, b"n", 1, Some(b"v".to_vec()));
    assert!(s.put_record_with(&rec, None, false).unwrap());
    assert!(s.packs.unsynced());
    // Packed: no file to fsync, one fdatasync of the packs.
    assert_eq!(s.sync_pending().unwrap(), 0);
    assert!(!s.packs.unsynced());
    // A durable put of an item held non-durably syncs it.
    let other = b"second".to_vec();
    s.put_block_with(Id::hash(&other), &other, &[], false)
        .unwrap();
    assert!(s.packs.unsynced());
    assert!(!s.put_block(Id::hash(&other), &other, &[]).unwrap());
    assert!(!s.packs.unsynced());
    let big = vec![7u8; packs::BLOCK_MAX + 1];
    s.put_block_with(Id::hash(&big), &big, &[], false).unwrap();
    assert_eq!(lock(&s.pending).len(), 1);
    assert!(!s.put_block(Id::hash(&big), &big, &[]).unwrap());
    assert_eq!(s.sync_pending().unwrap(), 0);
    // Reopen sees everything.
    drop(s);
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.stats().blocks, 3);
    assert_eq!(s.stats().records, 1);
}

#[test]
fn legacy_logs_are_put_back_never_rolled_back_then_deleted() {
    // A store of the release before packs, after a crash: item files
    // that may not have reached the disk, and the log that holds them.
    let d = tempfile::tempdir().unwrap();
    let (k1, d1) = block(1);
    let (r1, r2, r3) = (rec(1, b"one"), rec(2, b"two"), rec(3, b"three"));
    drop(Store::open(d.path()).unwrap());
    let record_path = Store::path_in(d.path(), Kind::Record, r1.key());
    fs::write(
        &record_path,
        encode_versions(std::slice::from_ref(&r2)).unwrap(),
    )
    .unwrap();
    let wal_dir = d.path().join(WAL_DIR);
    fs::create_dir(&wal_dir).unwrap();
    let log = [
        wal::encode_entry(wal::EntryKind::Block, &k1.0, &block_file::encode(&[], &d1)),
        wal::encode_entry(
            wal::EntryKind::Record,
            &r1.key().0,
            &encode_versions(std::slice::from_ref(&r1)).unwrap(),
        ),
    ]
    .concat();
    fs::write(wal_dir.join(format!("{:016x}.log", 7)), log).unwrap();
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.get_block(k1).unwrap().unwrap(), d1);
    assert_eq!(
        s.get_record(r1.key()).unwrap().unwrap().seq,
        2,
        "not rolled back"
    );
    assert!(!wal_dir.exists(), "the old log is gone once replayed");
    // A newer version goes to the packs; the old file goes once that is
    // durable, and the next open does not undo it.
    s.put_record(&r3, None).unwrap();
    assert!(!record_path.exists());
    drop(s);
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.get_record(r1.key()).unwrap().unwrap().seq, 3);
    assert_eq!((s.stats().blocks, s.stats().records), (1, 1));
}

#[test]
fn items_from_before_packs_are_read_and_moved_into_the_packs() {
    let d = tempfile::tempdir().unwrap();
    let (k1, d1) = block(1);
    let (r1, r2) = (rec(1, b"one"), rec(2, b"two"));
    drop(Store::open(d.path()).unwrap());
    let block_path = Store::path_in(d.path(), Kind::Block, k1);
    let record_path = Store::path_in(d.path(), Kind::Record, r1.key());
    fs::write(&block_path, block_file::encode(&[], &d1)).unwrap();
    fs::write(
        &record_path,
        encode_versions(std::slice::from_ref(&r1)).unwrap(),
    )
    .unwrap();
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.get_block(k1).unwrap().unwrap(), d1);
    assert_eq!(s.get_record(r1.key()).unwrap().unwrap(), r1);
    // A new claim rewrites the block, a new version the record: both
    // into the packs; the files go at the next sync.
    let owner = signer(5);
    assert!(
        s.put_block_with(k1, &d1, &[Claim::sign(&owner, k1, now_ms())], false)
            .unwrap()
    );
    assert!(s.put_record_with(&r2, None, false).unwrap());
    assert!(block_path.exists() && record_path.exists());
    s.sync_pending().unwrap();
    assert!(!block_path.exists() && !record_path.exists());
    let stats = s.stats();
    drop(s);
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.stats(), stats);
    assert_eq!(s.get_record(r1.key()).unwrap().unwrap(), r2);
    assert_eq!(s.owned(&owner.verifying_key().to_bytes(), None, 9).len(), 1);
}

#[test]
fn puts_not_yet_synced_are_read_back_by_the_next_open() {
    let d = tempfile::tempdir().unwrap();
    let (k1, d1) = block(1);
    {
        let s = Store::open(d.path()).unwrap();
        s.put_block_with(k1, &d1, &[], false).unwrap();
        s.put_record_with(&rec(4, b"x"), None, false).unwrap();
    }
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.get_block(k1).unwrap().unwrap(), d1);
    assert_eq!(s.get_record(rec(4, b"").key()).unwrap().unwrap().seq, 4);
}

#[test]
fn the_flush_compacts_the_packs_and_every_item_survives() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let (k1, d1) = block(1);
    s.put_block(k1, &d1, &[]).unwrap();
    // A record of about 1 MiB rewritten 40 times: 40 MiB, most garbage.
    let big = vec![0x5a; crate::record::MAX_RECORD_VALUE - 64];
    for seq in 1..=40u64 {
        let mut v = big.clone();
        v[0] = seq as u8;
        s.put_record_with(&rec(seq, &v), None, false).unwrap();
    }
    let before = s.packs.segments();
    assert!(before >= 3, "{before} segments");
    s.sync_pending().unwrap();
    let after = s.packs.segments();
    assert!(after < before, "{before} -> {after} segments");
    let (total, live) = s.packs.sizes();
    assert!(total < 2 * live + (32 << 20), "{total} {live}");
    assert_eq!(s.get_block(k1).unwrap().unwrap(), d1);
    assert_eq!(s.get_record(rec(1, b"").key()).unwrap().unwrap().seq, 40);
    let stats = s.stats();
    drop(s);
    let s = Store::open(d.path()).unwrap();
    assert_eq!(s.stats(), stats);
    assert_eq!(s.get_record(rec(1, b"").key()).unwrap().unwrap().seq, 40);
    assert_eq!(s.get_block(k1).unwrap().unwrap(), d1);
}

#[test]
fn a_sync_makes_packed_and_file_writes_durable() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let (k1, d1) = block(1);
    let big = vec![9u8; packs::BLOCK_MAX + 10];
    s.put_block_with(k1, &d1, &[], false).unwrap();
    s.put_block_with(Id::hash(&big), &big, &[], false).unwrap();
    // The big block's file and the packs.
    assert_eq!(s.sync_pending_now().unwrap(), 2);
    assert_eq!(s.sync_pending_now().unwrap(), 0);
    assert_eq!(s.sync_pending().unwrap(), 0);
}

/// New blocks are named by BLAKE3, blocks of earlier releases by SHA-256:
/// the store takes and serves both, and refuses bytes that neither names.
#[test]
fn blocks_named_by_blake3_or_by_sha256_are_stored_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for len in [100usize, 200 << 10] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (new, old) = (Id::of_block(&data), Id::hash(&data));
        assert_eq!(s.put_block(new, &data, &[]), Ok(true));
        assert_eq!(s.put_block(old, &data, &[]), Ok(true));
        assert_eq!(s.get_block(new).unwrap().as_deref(), Some(&data[..]));
        assert_eq!(s.get_block(old).unwrap().as_deref(), Some(&data[..]));
        let mut other = data.clone();
        other[0] ^= 1;
        assert_eq!(s.put_block(new, &other, &[]), Err(StoreError::BadHash));
        assert_eq!(s.put_block(old, &other, &[]), Err(StoreError::BadHash));
    }
    // Reopened, the scrub finds all four good.
    let again = Store::open(dir.path()).unwrap();
    let done = again.scrub(None, u64::MAX).unwrap();
    assert_eq!((done.checked, done.corrupt.len()), (4, 0));
}

//! Vault and open-file behaviour over the in-memory backend.

use super::mem_store::MemStore;
use super::object::{Attrs, CHUNK_SIZE, JOURNAL_MAX, Kind};
use super::*;
use std::sync::Arc;

fn vault() -> Arc<Vault<MemStore>> {
    Vault::new(Arc::new(MemStore::default()), Identity::generate())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn write_read_across_chunks_sparse_and_truncate() {
    let v = vault();
    let root = v.root();
    let (link, state) = v
        .create(&root, b"f", Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link.clone(), state);
    let data = pattern(3 * CHUNK_SIZE + 123, 1);
    // Written in odd-sized pieces.
    let mut off = 0;
    for piece in data.chunks(300_001) {
        f.write(&v, off as u64, piece).await.unwrap();
        off += piece.len();
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let mut g = OpenFile::open(&v, link.clone()).await.unwrap();
    assert_eq!(g.size(), data.len() as u64);
    assert_eq!(g.read(&v, 0, data.len() + 10).await.unwrap(), data);
    // Overwrite in the middle, across a chunk boundary.
    let mid = CHUNK_SIZE as u64 - 5;
    g.write(&v, mid, b"0123456789").await.unwrap();
    // Sparse write far past the end.
    let far = 10 * CHUNK_SIZE as u64 + 7;
    g.write(&v, far, b"tail").await.unwrap();
    g.flush(&v, Durability::Later).await.unwrap();
    let mut h = OpenFile::open(&v, link.clone()).await.unwrap();
    assert_eq!(h.size(), far + 4);
    assert_eq!(h.read(&v, mid, 10).await.unwrap(), b"0123456789");
    assert_eq!(h.read(&v, far - 3, 7).await.unwrap(), b"\0\0\0tail");
    assert_eq!(
        h.read(&v, 5 * CHUNK_SIZE as u64, 4).await.unwrap(),
        vec![0; 4]
    );
    assert_eq!(h.read(&v, 0, 100).await.unwrap(), data[..100]);
    // Truncate into the middle of a chunk, then grow again: zeros.
    h.truncate(&v, 100).await.unwrap();
    h.truncate(&v, 200).await.unwrap();
    h.flush(&v, Durability::Later).await.unwrap();
    let mut i = OpenFile::open(&v, link).await.unwrap();
    let got = i.read(&v, 0, 1000).await.unwrap();
    assert_eq!(got.len(), 200);
    assert_eq!(&got[..100], &data[..100]);
    assert_eq!(&got[100..], &[0u8; 100][..]);
}

#[tokio::test]
async fn directories_create_remove_rename() {
    let v = vault();
    let root = v.root();
    let a = Attrs::new(0o755, 0, 0);
    let (d1, _) = v
        .create(&root, b"d1", Kind::Dir, a.clone(), None)
        .await
        .unwrap();
    let (d2, _) = v
        .create(&root, b"d2", Kind::Dir, a.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        v.create(&root, b"d1", Kind::File, a.clone(), None)
            .await
            .unwrap_err(),
        FsError::Exists
    );
    v.create(&d1, b"x", Kind::File, a.clone(), None)
        .await
        .unwrap();
    v.create(&d2, b"y", Kind::File, a.clone(), None)
        .await
        .unwrap();
    v.create(
        &d1,
        b"s",
        Kind::Symlink,
        a.clone(),
        Some(b"/target".to_vec()),
    )
    .await
    .unwrap();
    // Across directories, replacing a file.
    v.rename(&d1, b"x", &d2, b"y", None).await.unwrap();
    let (_, d2v) = v.resolve("/d2").await.unwrap();
    assert_eq!(d2v.obj.entries().unwrap().len(), 1);
    assert!(v.resolve("/d1/x").await.is_err());
    v.resolve("/d2/y").await.unwrap();
    // Directory over a file refused; non-empty directory refused.
    assert_eq!(
        v.rename(&root, b"d1", &d2, b"y", None).await.unwrap_err(),
        FsError::NotDir
    );
    assert_eq!(
        v.remove(&root, b"d1", true, None).await.unwrap_err(),
        FsError::NotEmpty
    );
    assert_eq!(
        v.remove(&d1, b"s", true, None).await.unwrap_err(),
        FsError::NotDir
    );
    v.remove(&d1, b"s", false, None).await.unwrap();
    v.remove(&root, b"d1", true, None).await.unwrap();
    assert_eq!(v.resolve("/d1").await.unwrap_err(), FsError::NotFound);
    // Same-directory rename.
    v.rename(&d2, b"y", &d2, b"z", None).await.unwrap();
    let (_, d2v) = v.resolve("/d2").await.unwrap();
    assert_eq!(
        d2v.obj.entries().unwrap().keys().collect::<Vec<_>>(),
        vec![&b"z".to_vec()]
    );
    assert_eq!(
        v.create(&root, &[b'n'; 256], Kind::File, a, None)
            .await
            .unwrap_err(),
        FsError::NameTooLong
    );
}

#[tokio::test]
async fn concurrent_directory_updates_both_land() {
    let v = vault();
    let root = v.root();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let v = Arc::clone(&v);
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            v.create(
                &root,
                format!("f{i}").as_bytes(),
                Kind::File,
                Attrs::new(0o644, 0, 0),
                None,
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, r) = v.resolve("/").await.unwrap();
    assert_eq!(r.obj.entries().unwrap().len(), 20);
}

#[tokio::test]
async fn nothing_in_the_store_is_plaintext() {
    let store = Arc::new(MemStore::default());
    let v = Vault::new(Arc::clone(&store), Identity::generate());
    let root = v.root();
    let (link, st) = v
        .create(
            &root,
            b"MARKERNAME",
            Kind::File,
            Attrs::new(0o644, 0, 0),
            None,
        )
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link, st);
    f.write(&v, 0, b"MARKERCONTENT and more").await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let mut all = Vec::new();
    for b in store.blocks.lock().unwrap().values() {
        all.extend_from_slice(b);
    }
    for r in store.records.lock().unwrap().values() {
        all.extend_from_slice(&postcard::to_allocvec(r).unwrap());
    }
    for marker in [&b"MARKERNAME"[..], b"MARKERCONTENT"] {
        assert!(!all.windows(marker.len()).any(|w| w == marker));
    }
    // Another identity cannot read the tree.
    let other = Vault::new(store, Identity::generate());
    let (_, r) = other.resolve("/").await.unwrap();
    assert!(r.obj.entries().unwrap().is_empty());
}

#[tokio::test]
async fn small_files_live_in_the_manifest() {
    let store = Arc::new(MemStore::default());
    let v = Vault::new(Arc::clone(&store), Identity::generate());
    // Blocks counted here are the file's own, not kept versions'.
    v.set_retention(std::time::Duration::ZERO);
    let root = v.root();
    let (link, st) = v
        .create(&root, b"s", Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link.clone(), st);
    f.write(&v, 0, &pattern(4096, 3)).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    assert_eq!(
        store.blocks.lock().unwrap().len(),
        0,
        "a 4 KiB file needs no block"
    );
    let mut g = OpenFile::open(&v, link.clone()).await.unwrap();
    assert_eq!(g.read(&v, 0, 10_000).await.unwrap(), pattern(4096, 3));
    // Growing past the inline limit keeps the few bytes in the record's
    // journal...
    g.write(&v, 20_000, b"end").await.unwrap();
    g.flush(&v, Durability::Later).await.unwrap();
    assert_eq!(store.blocks.lock().unwrap().len(), 0);
    let mut h = OpenFile::open(&v, link.clone()).await.unwrap();
    let all = h.read(&v, 0, 30_000).await.unwrap();
    assert_eq!(all.len(), 20_003);
    assert_eq!(&all[..4096], &pattern(4096, 3)[..]);
    assert_eq!(&all[20_000..], b"end");
    // ...and more than the journal holds moves the journal into a block,
    // and the new bytes into a fresh journal (they fit one).
    h.write(&v, 30_000, &pattern(JOURNAL_MAX, 4)).await.unwrap();
    h.flush(&v, Durability::Later).await.unwrap();
    assert_eq!(store.blocks.lock().unwrap().len(), 1);
    let mut h = OpenFile::open(&v, link.clone()).await.unwrap();
    assert_eq!(h.state.obj.content().unwrap().journal.bytes(), JOURNAL_MAX);
    let all = h.read(&v, 0, 200_000).await.unwrap();
    assert_eq!(all.len(), 30_000 + JOURNAL_MAX);
    assert_eq!(&all[..4096], &pattern(4096, 3)[..]);
    assert_eq!(&all[20_000..20_003], b"end");
    assert_eq!(&all[30_000..], &pattern(JOURNAL_MAX, 4)[..]);
    // Shrinking brings it back inline.
    h.truncate(&v, 10).await.unwrap();
    h.flush(&v, Durability::Later).await.unwrap();
    let mut i = OpenFile::open(&v, link).await.unwrap();
    assert_eq!(i.read(&v, 0, 100).await.unwrap(), pattern(10, 3));
}

#[tokio::test]
async fn growing_an_inline_file_keeps_chunk_zero() {
    // Regression: an empty inline manifest must not shadow or replace a
    // chunk 0 uploaded later (found by tests/mount_process.rs).
    let v = vault();
    let root = v.root();
    let (link, st) = v
        .create(&root, b"g", Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link.clone(), st);
    f.write(&v, 0, b"tiny").await.unwrap();
    f.truncate(&v, 0).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let big = pattern(3 * CHUNK_SIZE, 9);
    let mut g = OpenFile::open(&v, link.clone()).await.unwrap();
    g.write(&v, 0, &big).await.unwrap();
    assert_eq!(g.read(&v, 0, 64).await.unwrap(), big[..64], "before close");
    g.flush(&v, Durability::Later).await.unwrap();
    let mut h = OpenFile::open(&v, link).await.unwrap();
    assert_eq!(h.read(&v, 0, big.len()).await.unwrap(), big, "after close");
}

/// Every stored record: key → (sequence number, value length).
fn records(store: &MemStore) -> std::collections::HashMap<crate::id::Id, (u64, usize)> {
    store
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                *k,
                (v[0].seq, v[0].value.as_ref().map_or(0, bytes::Bytes::len)),
            )
        })
        .collect()
}

/// Creates `n` empty files named `{prefix}{i}` in `dir`, written behind.
async fn create_many(v: &Arc<Vault<MemStore>>, dir: &Link, prefix: &str, n: usize) {
    let mut tickets = Vec::new();
    for i in 0..n {
        let (_, _, t) = v
            .create_pending(
                dir,
                format!("{prefix}{i}").as_bytes(),
                Attrs::new(0o644, 0, 0),
            )
            .await
            .unwrap();
        tickets.push(t);
    }
    for t in tickets {
        t.wait().await.unwrap();
    }
}

#[tokio::test]
async fn a_large_directory_is_sharded_and_a_create_rewrites_one_shard() {
    let store = Arc::new(MemStore::default());
    let id = [9u8; 32];
    let v = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    let (dir, _) = v
        .create(&v.root(), b"big", Kind::Dir, Attrs::new(0o755, 0, 0), None)
        .await
        .unwrap();
    create_many(&v, &dir, "file-", 3000).await;
    // No record holds much more than a shard's worth.
    let largest = records(&store).values().map(|(_, len)| *len).max().unwrap();
    assert!(
        largest < 2 * super::shards::SPLIT_BYTES,
        "largest record {largest}"
    );
    // A cold vault lists all of them.
    let cold = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    let got = cold.load(&dir).await.unwrap();
    assert!(got.layout.is_sharded());
    assert_eq!(got.obj.entries().unwrap().len(), 3000);
    // One more create stores the one leaf and the directory record.
    let before = records(&store);
    create_many(&cold, &dir, "one-more-", 1).await;
    let changed = records(&store)
        .iter()
        .filter(|(k, (seq, _))| before.get(*k).map(|b| b.0) != Some(*seq))
        .count();
    assert!(changed <= 2, "{changed} records rewritten by one create");
    // Removing everything empties it; then it can be removed itself.
    let names: Vec<Vec<u8>> = cold
        .load(&dir)
        .await
        .unwrap()
        .obj
        .entries()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for n in &names {
        cold.remove(&dir, n, false, None).await.unwrap();
    }
    let fresh = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    assert!(
        fresh
            .load(&dir)
            .await
            .unwrap()
            .obj
            .entries()
            .unwrap()
            .is_empty()
    );
    fresh
        .remove(&fresh.root(), b"big", true, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_writers_of_a_sharded_directory_both_land() {
    let store = Arc::new(MemStore::default());
    let id = [8u8; 32];
    let a = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    let b = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    let (dir, _) = a
        .create(&a.root(), b"d", Kind::Dir, Attrs::new(0o755, 0, 0), None)
        .await
        .unwrap();
    create_many(&a, &dir, "base-", 600).await;
    // Both add many names at once, splitting leaves while racing.
    tokio::join!(
        create_many(&a, &dir, "a-", 1500),
        create_many(&b, &dir, "b-", 1500)
    );
    let cold = Vault::new(Arc::clone(&store), Identity::from_secret(id));
    let got = cold.load(&dir).await.unwrap();
    let entries = got.obj.entries().unwrap();
    assert_eq!(entries.len(), 3600);
    for i in 0..1500 {
        assert!(entries.contains_key(format!("a-{i}").as_bytes()));
        assert!(entries.contains_key(format!("b-{i}").as_bytes()));
    }
}

#[tokio::test]
async fn hard_links_share_content_and_count_names() {
    let v = vault();
    let root = v.root();
    let (d, _) = v
        .create(&root, b"d", Kind::Dir, Attrs::new(0o755, 0, 0), None)
        .await
        .unwrap();
    let (link, st) = v
        .create(&root, b"a", Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link.clone(), st);
    f.write(&v, 0, &pattern(20_000, 3)).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let linked = v.hard_link(&link, &d, b"b").await.unwrap();
    assert_eq!(linked.obj.attrs.nlink, 2);
    assert_eq!(
        v.hard_link(&link, &d, b"b").await.unwrap_err(),
        FsError::Exists
    );
    assert_eq!(
        v.load(&link).await.unwrap().obj.attrs.nlink,
        2,
        "a failed link takes its count back"
    );
    assert_eq!(
        v.hard_link(&d, &root, b"dir-link").await.unwrap_err(),
        FsError::Permission
    );
    // The open file saves over the changed count without losing it.
    f.write(&v, 0, b"new head").await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let (bl, bv) = v.resolve("/d/b").await.unwrap();
    assert_eq!(bl.name, link.name);
    assert_eq!(bv.obj.attrs.nlink, 2);
    let mut g = OpenFile::open(&v, bl.clone()).await.unwrap();
    assert_eq!(g.read(&v, 0, 8).await.unwrap(), b"new head");
    // Removing one name keeps the object; removing the last deletes it.
    assert!(!v.remove(&root, b"a", false, None).await.unwrap());
    let (_, bv) = v.resolve("/d/b").await.unwrap();
    assert_eq!(bv.obj.attrs.nlink, 1);
    assert_eq!(g.read(&v, 8, 10).await.unwrap(), pattern(20_000, 3)[8..18]);
    assert!(v.remove(&d, b"b", false, None).await.unwrap());
    assert_eq!(v.load(&link).await.unwrap_err(), FsError::NotFound);
}

#[tokio::test]
async fn fifos_and_sockets_are_objects_with_attributes_only() {
    let v = vault();
    let root = v.root();
    for (name, kind) in [(&b"fifo"[..], Kind::Fifo), (b"sock", Kind::Socket)] {
        let (link, _) = v
            .create(&root, name, kind, Attrs::new(0o600, 7, 8), None)
            .await
            .unwrap();
        let back = v.load(&link).await.unwrap();
        assert_eq!(back.obj.attrs.uid, 7);
        assert!(back.obj.fits(kind));
    }
    let listed = v.load(&root).await.unwrap();
    assert_eq!(listed.obj.entry(b"fifo").unwrap().kind, Kind::Fifo);
}

#[tokio::test]
async fn a_removal_written_behind_is_seen_at_once_and_deletes_after_it_is_stored() {
    let v = vault();
    let root = v.root();
    let (link, _) = v
        .create(&root, b"f", Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    let mut f = OpenFile::open(&v, link.clone()).await.unwrap();
    f.write(&v, 0, b"bytes").await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let gone = v.remove_behind(&root, b"f", false, None).await.unwrap();
    assert_eq!(gone.name, link.name);
    assert_eq!(
        v.load(&root).await.unwrap().obj.entry(b"f"),
        Err(FsError::NotFound)
    );
    assert_eq!(
        v.remove_behind(&root, b"f", false, None).await.unwrap_err(),
        FsError::NotFound
    );
    // Settled, the entry is stored gone and then the object deleted.
    v.settle_all().await.unwrap();
    assert_eq!(v.load(&link).await.unwrap_err(), FsError::NotFound);
}

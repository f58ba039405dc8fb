//! Open files over the in-memory backend: writes cost their size, files
//! of any size, concurrent writers, and a byte-array model.

use super::mem_store::MemStore;
use super::object::{Attrs, CHUNK_SIZE, JOURNAL_CARRY, JOURNAL_MAX, Kind, Link};
use super::*;
use crate::id::Id;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const MIB: usize = 1 << 20;

fn vault_on(store: &Arc<MemStore>, id: &[u8; 32]) -> Arc<Vault<MemStore>> {
    Vault::new(Arc::clone(store), Identity::from_secret(*id))
}

/// Bytes held by the store: blocks and record values.
fn stored_bytes(store: &MemStore) -> usize {
    let b: usize = store.blocks.lock().unwrap().values().map(Vec::len).sum();
    let r: usize = store
        .records
        .lock()
        .unwrap()
        .values()
        .flatten()
        .map(|r| r.value.as_ref().map_or(0, bytes::Bytes::len))
        .sum();
    b + r
}

async fn new_file(v: &Arc<Vault<MemStore>>, name: &[u8]) -> OpenFile {
    let (link, state) = v
        .create(&v.root(), name, Kind::File, Attrs::new(0o644, 0, 0), None)
        .await
        .unwrap();
    OpenFile::from_state(link, state)
}

fn random(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

#[tokio::test]
async fn a_small_write_stores_about_its_size() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[1; 32]);
    let mut rng = StdRng::seed_from_u64(1);
    let mut f = new_file(&v, b"big").await;
    let data = random(&mut rng, 64 * MIB);
    for (i, piece) in data.chunks(MIB).enumerate() {
        f.write(&v, (i * MIB) as u64, piece).await.unwrap();
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let before = stored_bytes(&store);
    assert!(before < 64 * MIB + 64 * 1024, "{before} bytes for 64 MiB");
    // 100 random 4 KiB writes, each flushed (as pwrite + fsync).
    let mut model = data;
    for _ in 0..100 {
        let off = rng.gen_range(0..64 * MIB - 4096);
        let piece = random(&mut rng, 4096);
        f.write(&v, off as u64, &piece).await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        model[off..off + 4096].copy_from_slice(&piece);
    }
    let grown = stored_bytes(&store) - before;
    // Each flush stores its 4 KiB plus a changed index: far from the
    // 1 MiB chunk per write of format v1.
    assert!(
        grown < 100 * 24 * 1024,
        "100 small writes stored {grown} bytes"
    );
    let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
    assert_eq!(g.read(&v, 0, 64 * MIB).await.unwrap(), model);
}

#[tokio::test]
async fn a_huge_sparse_file_with_spread_writes() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[2; 32]);
    let mut f = new_file(&v, b"sparse").await;
    let size: u64 = 100 << 30;
    f.truncate(&v, size).await.unwrap();
    // 2000 writes spread over 100 GiB: more extents than a record holds.
    let step = size / 2000;
    // (40 bytes each: more than the record's journal holds.)
    for i in 0..2000u64 {
        f.write(&v, i * step + i, &[i.to_be_bytes(); 5].concat())
            .await
            .unwrap();
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let link: Link = f.link.clone();
    let mut g = OpenFile::open(&v, link.clone()).await.unwrap();
    assert_eq!(g.size(), size);
    let c = g.state.obj.content().unwrap();
    assert_eq!(c.extents.len(), 2000);
    assert!(!c.index_blocks.is_empty(), "the index is a tree of blocks");
    for i in [0u64, 1, 999, 1999] {
        let at = i * step + i;
        assert_eq!(g.read(&v, at, 8).await.unwrap(), i.to_be_bytes());
        assert_eq!(g.read(&v, at + 40, 8).await.unwrap(), [0u8; 8]);
    }
    assert_eq!(g.read(&v, size - 3, 10).await.unwrap(), [0u8; 3]);
    // The whole thing stores little: 2000 × 8 bytes and the index.
    assert!(stored_bytes(&store) < 512 * 1024);
}

/// A file of 8 whole chunks (no tail left in the journal), written and
/// flushed: the vault, the file, its bytes and the random source.
async fn chunked_file(store: &Arc<MemStore>) -> (Arc<Vault<MemStore>>, OpenFile, Vec<u8>, StdRng) {
    let v = vault_on(store, &[7; 32]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut f = new_file(&v, b"db").await;
    let model = random(&mut rng, 8 * CHUNK_SIZE);
    f.write(&v, 0, &model).await.unwrap();
    f.flush(&v, Durability::Now).await.unwrap();
    (v, f, model, rng)
}

#[tokio::test]
async fn a_small_write_and_flush_store_one_record_and_no_block() {
    let store = Arc::new(MemStore::default());
    let (v, mut f, mut model, mut rng) = chunked_file(&store).await;
    let blocks = held_blocks(&store);
    let puts = store.block_puts();
    // Writes of 4 KiB fill the journal: each flush stores the record.
    // The file's set of stored blocks stays the very same one.
    let at = |i: usize| i * 300_000;
    let stored = Arc::clone(&f.stored_blocks);
    for i in 0..JOURNAL_MAX / 4096 {
        let piece = random(&mut rng, 4096);
        model[at(i)..at(i) + 4096].copy_from_slice(&piece);
        f.write(&v, at(i) as u64, &piece).await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        assert_eq!(store.block_puts(), puts, "write {i} stored a block");
        assert!(Arc::ptr_eq(&f.stored_blocks, &stored), "write {i}");
        assert_eq!(*f.stored_blocks, f.state.obj.blocks());
    }
    assert_eq!(held_blocks(&store), blocks);
    let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
    assert_eq!(g.state.obj.content().unwrap().journal.bytes(), JOURNAL_MAX);
    assert!(g.read(&v, 0, 8 * CHUNK_SIZE).await.unwrap() == model);
    // The next one moves the journal into one block, and itself into a
    // fresh journal.
    let piece = random(&mut rng, 4096);
    model[at(20)..at(20) + 4096].copy_from_slice(&piece);
    f.write(&v, at(20) as u64, &piece).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    assert_eq!(*f.stored_blocks, f.state.obj.blocks());
    assert!(f.stored_blocks.len() > stored.len());
    let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
    assert_eq!(g.state.obj.content().unwrap().journal.bytes(), 4096);
    assert_eq!(store.block_puts(), puts + 1);
    assert!(g.read(&v, 0, 8 * CHUNK_SIZE).await.unwrap() == model);
}

#[tokio::test]
async fn a_journal_moved_into_a_block_does_not_undo_another_writers_bytes() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[8; 32]), vault_on(&store, &[8; 32]));
    let mut fa = new_file(&a, b"shared").await;
    fa.write(&a, 0, &vec![b'.'; 2 * MIB]).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    fa.write(&a, 10, b"old A").await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    // B, on A's version, overwrites those bytes (in its journal).
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    fb.write(&b, 10, b"new B").await.unwrap();
    fb.flush(&b, Durability::Later).await.unwrap();
    // A, still on its own version, writes more than the journal holds:
    // its journal ("old A") goes into a block, and its save is laid over
    // B's version.
    fa.write(&a, MIB as u64, &vec![b'a'; JOURNAL_MAX])
        .await
        .unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    let mut g = OpenFile::open(&a, fa.link.clone()).await.unwrap();
    assert_eq!(g.read(&a, 10, 5).await.unwrap(), b"new B");
    assert_eq!(
        g.read(&a, MIB as u64, JOURNAL_MAX).await.unwrap(),
        vec![b'a'; JOURNAL_MAX]
    );
    assert_eq!(g.read(&a, 0, 10).await.unwrap(), b"..........");
}

/// The journal bytes of `link`'s stored record, read by a fresh vault,
/// and whether that vault reads the file as `model`.
async fn stored_journal(store: &Arc<MemStore>, link: &Link, model: &[u8]) -> (usize, bool) {
    let fresh = vault_on(store, &[7; 32]);
    let mut g = OpenFile::open(&fresh, link.clone()).await.unwrap();
    let journal = g.state.obj.content().unwrap().journal.bytes();
    let same = g.read(&fresh, 0, model.len()).await.unwrap() == model;
    (journal, same)
}

#[tokio::test]
async fn an_fsync_leaves_a_full_journal_to_a_spill_behind_and_a_failed_one_to_the_next() {
    use std::sync::atomic::Ordering::Relaxed;
    let store = Arc::new(MemStore::default());
    let (v, mut f, mut model, mut rng) = chunked_file(&store).await;
    let at = |i: usize| i * 150_000;
    // Every spill fails to store its block: each fsync still succeeds,
    // its record carrying the journal, up to JOURNAL_CARRY.
    store.fail_blocks_over.store(8 << 10, Relaxed);
    let carried = JOURNAL_CARRY / 4096;
    for i in 0..carried {
        let piece = random(&mut rng, 4096);
        model[at(i)..at(i) + 4096].copy_from_slice(&piece);
        f.write(&v, at(i) as u64, &piece).await.unwrap();
        f.flush(&v, Durability::Now).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        stored_journal(&store, &f.link, &model).await,
        (JOURNAL_CARRY, true)
    );
    // Past that the fsync moves the journal itself, and reports the
    // failure; the next flush stores the moved bytes.
    let piece = random(&mut rng, 4096);
    model[at(carried)..at(carried) + 4096].copy_from_slice(&piece);
    f.write(&v, at(carried) as u64, &piece).await.unwrap();
    let puts = store.block_puts();
    assert!(f.flush(&v, Durability::Now).await.is_err());
    assert!(store.block_puts() > puts, "the spill was tried");
    store.fail_blocks_over.store(0, Relaxed);
    f.flush(&v, Durability::Now).await.unwrap();
    let (journal, same) = stored_journal(&store, &f.link, &model).await;
    assert!(same);
    assert!(journal <= JOURNAL_MAX, "{journal}");
    // Spills behind that store: fsyncs never wait for them, and a close
    // lays the last one in; another machine reads every byte.
    for i in carried + 1..carried + 40 {
        let piece = random(&mut rng, 4096);
        model[at(i)..at(i) + 4096].copy_from_slice(&piece);
        f.write(&v, at(i) as u64, &piece).await.unwrap();
        f.flush(&v, Durability::Now).await.unwrap();
        let (journal, same) = stored_journal(&store, &f.link, &model).await;
        assert!(same, "after write {i}");
        assert!(journal <= JOURNAL_CARRY, "{journal}");
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let (journal, same) = stored_journal(&store, &f.link, &model).await;
    assert!(same);
    assert!(journal <= JOURNAL_MAX, "{journal} after a close");
}

#[tokio::test]
async fn random_small_fsyncs_lay_their_blocks_over_the_index_tree_in_the_record() {
    let store = Arc::new(MemStore::default());
    let (v, mut f, mut model, mut rng) = chunked_file(&store).await;
    let pwrite = |model: &mut Vec<u8>, rng: &mut StdRng| {
        let off = rng.gen_range(0..model.len() / 4096) * 4096;
        let piece = random(rng, 4096);
        model[off..off + 4096].copy_from_slice(&piece);
        (off as u64, piece)
    };
    // Enough random writes for the extents to need an index tree.
    for _ in 0..400 {
        let (off, piece) = pwrite(&mut model, &mut rng);
        f.write(&v, off, &piece).await.unwrap();
        f.flush(&v, Durability::Now).await.unwrap();
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let c = f.state.obj.content().unwrap();
    let leaves = c.index_blocks.len();
    assert!(leaves >= 3, "{leaves} index blocks");
    // From here, a spill stores its own block, and the tree's nodes only
    // when the extents laid over it pass OVERLAY_MAX.
    let puts = store.block_puts();
    let n = 200;
    for i in 0..n {
        let (off, piece) = pwrite(&mut model, &mut rng);
        f.write(&v, off, &piece).await.unwrap();
        f.flush(&v, Durability::Now).await.unwrap();
        if i % 50 == 0 {
            assert!(stored_journal(&store, &f.link, &model).await.1, "write {i}");
        }
    }
    f.flush(&v, Durability::Later).await.unwrap();
    let spills = n * 4096 / JOURNAL_MAX;
    let rewrites = n / super::index::OVERLAY_MAX + 1;
    let bound = spills + rewrites * (leaves + 2);
    let stored = store.block_puts() - puts;
    // (Storing the changed leaves at every spill puts about three
    // blocks a spill here.)
    assert!(
        stored <= bound && stored < 2 * spills,
        "{stored} block puts for {spills} spills"
    );
    assert!(stored_journal(&store, &f.link, &model).await.1);
}

#[tokio::test]
async fn a_truncation_drops_journal_bytes_for_good() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[9; 32]);
    let mut f = new_file(&v, b"t").await;
    f.write(&v, 0, &vec![1u8; 100_000]).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    f.write(&v, 90_000, b"journal").await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    f.truncate(&v, 50_000).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    f.truncate(&v, 100_000).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
    assert_eq!(g.read(&v, 90_000, 7).await.unwrap(), vec![0u8; 7]);
    assert_eq!(g.read(&v, 49_999, 1).await.unwrap(), vec![1u8]);
}

#[tokio::test]
async fn concurrent_writers_of_one_file_both_land() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[3; 32]), vault_on(&store, &[3; 32]));
    let mut fa = new_file(&a, b"shared").await;
    let base = vec![b'.'; 3 * CHUNK_SIZE];
    fa.write(&a, 0, &base).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    // Both write different ranges; B saves second, on top of A's version.
    fa.write(&a, 10, b"from A").await.unwrap();
    fb.write(&b, CHUNK_SIZE as u64 * 2, b"from B")
        .await
        .unwrap();
    fb.truncate(&b, 3 * CHUNK_SIZE as u64 + 100).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    fb.flush(&b, Durability::Later).await.unwrap();
    let mut g = OpenFile::open(&a, fa.link.clone()).await.unwrap();
    assert_eq!(g.size(), 3 * CHUNK_SIZE as u64 + 100);
    assert_eq!(g.read(&a, 10, 6).await.unwrap(), b"from A");
    assert_eq!(
        g.read(&a, CHUNK_SIZE as u64 * 2, 6).await.unwrap(),
        b"from B"
    );
    assert_eq!(g.read(&a, 0, 10).await.unwrap(), b"..........");
    assert_eq!(
        g.read(&a, 3 * CHUNK_SIZE as u64, 100).await.unwrap(),
        vec![0; 100]
    );
}

#[tokio::test]
async fn writes_truncates_and_reopens_match_a_byte_array() {
    for seed in 0..12u64 {
        let store = Arc::new(MemStore::default());
        let v = vault_on(&store, &[4; 32]);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut f = new_file(&v, b"model").await;
        let mut model: Vec<u8> = Vec::new();
        for step in 0..60 {
            match rng.gen_range(0..10) {
                0 => {
                    let n = rng.gen_range(0..=model.len() + 3 * CHUNK_SIZE);
                    f.truncate(&v, n as u64).await.unwrap();
                    model.resize(n, 0);
                }
                1 => f.flush(&v, Durability::Later).await.unwrap(),
                2 => {
                    f.flush(&v, Durability::Later).await.unwrap();
                    f = OpenFile::open(&v, f.link.clone()).await.unwrap();
                }
                _ => {
                    // Mostly small writes, sometimes large, some far out.
                    let len = if rng.gen_bool(0.8) {
                        rng.gen_range(1..10_000)
                    } else {
                        rng.gen_range(1..2 * CHUNK_SIZE)
                    };
                    let off = rng.gen_range(0..model.len() + CHUNK_SIZE);
                    let piece = random(&mut rng, len);
                    f.write(&v, off as u64, &piece).await.unwrap();
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&piece);
                }
            }
            assert_eq!(f.size(), model.len() as u64, "seed {seed} step {step}");
            if step % 7 == 0 {
                let got = f.read(&v, 0, model.len() + 10).await.unwrap();
                assert!(got == model, "seed {seed} step {step}: content differs");
            }
        }
        f.flush(&v, Durability::Later).await.unwrap();
        let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
        assert!(
            g.read(&v, 0, model.len() + 10).await.unwrap() == model,
            "seed {seed}: reopened content differs"
        );
    }
}

/// The keys of the blocks `store` holds.
fn held_blocks(store: &MemStore) -> crate::id::IdSet {
    store.blocks.lock().unwrap().keys().copied().collect()
}

#[tokio::test]
async fn overwrites_and_deletes_free_the_blocks_no_version_uses() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[9; 32]);
    let mut rng = StdRng::seed_from_u64(9);
    let mut f = new_file(&v, b"freed").await;
    let data = random(&mut rng, 8 * MIB);
    f.write(&v, 0, &data).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    v.settle_all().await.unwrap();
    assert_eq!(held_blocks(&store), f.state.obj.blocks());
    // Overwrite the first 2 MiB whole, then 300 small writes, each
    // flushed: the index outgrows the record and its nodes are replaced.
    f.write(&v, 0, &random(&mut rng, 2 * MIB)).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    for _ in 0..300 {
        let off = rng.gen_range(0..8 * MIB - 100);
        f.write(&v, off as u64, &random(&mut rng, 100))
            .await
            .unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
    }
    v.settle_all().await.unwrap();
    let live = f.state.obj.blocks();
    assert!(!f.state.obj.content().unwrap().index_blocks.is_empty());
    assert_eq!(
        held_blocks(&store),
        live,
        "exactly the blocks the current version refers to are kept"
    );
    // What is stored is about the file's size, not its history.
    let held: usize = store.blocks.lock().unwrap().values().map(Vec::len).sum();
    assert!(held < 8 * MIB + 300 * 1024, "{held} bytes kept");
    // Truncating to a small (inline) file frees every block.
    f.truncate(&v, 100).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    v.settle_all().await.unwrap();
    assert!(held_blocks(&store).is_empty());
    // A deleted file's blocks go too.
    let mut g = new_file(&v, b"deleted").await;
    g.write(&v, 0, &random(&mut rng, 3 * MIB)).await.unwrap();
    g.flush(&v, Durability::Later).await.unwrap();
    assert!(!held_blocks(&store).is_empty());
    v.remove(&v.root(), b"deleted", false, None).await.unwrap();
    v.settle_all().await.unwrap();
    assert!(held_blocks(&store).is_empty());
}

#[tokio::test]
async fn a_concurrent_writers_blocks_survive_the_other_writers_release() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[8; 32]), vault_on(&store, &[8; 32]));
    let mut rng = StdRng::seed_from_u64(8);
    let mut fa = new_file(&a, b"both").await;
    fa.write(&a, 0, &random(&mut rng, 3 * MIB)).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    // A replaces the first MiB; B, from the old version, the last.
    fa.write(&a, 0, &random(&mut rng, MIB)).await.unwrap();
    let tail = random(&mut rng, MIB);
    fb.write(&b, 2 * MIB as u64, &tail).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    fb.flush(&b, Durability::Later).await.unwrap();
    a.settle_all().await.unwrap();
    b.settle_all().await.unwrap();
    let mut g = OpenFile::open(&a, fa.link.clone()).await.unwrap();
    // Held: the current version's blocks and those of the versions kept
    // (A's version, which B's save replaced: A's two saves were one
    // open's), no more.
    let history = g.state.obj.content().unwrap().history.clone();
    assert_eq!(history.kept.len(), 1);
    let kept = a.kept_blocks(&fa.link, &history, None).await.unwrap();
    let live: crate::id::IdSet = g.state.obj.blocks().iter().chain(&kept).copied().collect();
    assert_eq!(held_blocks(&store), live);
    assert_eq!(g.read(&a, 2 * MIB as u64, MIB).await.unwrap(), tail);
}

#[tokio::test]
async fn orphans_are_released_only_when_unused_and_old() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[7; 32]);
    let mut f = new_file(&v, b"kept").await;
    f.write(&v, 0, &vec![5u8; 2 * MIB]).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    // A block stored and never referred to (a crash before the save).
    let lost = vec![6u8; 1000];
    let key = Id::hash(&lost);
    store
        .put_block(key, lost, v.identity().claim(key), Durability::Later)
        .await
        .unwrap();
    let listed: Vec<crate::ownership::OwnedBlock> = store
        .claims
        .lock()
        .unwrap()
        .iter()
        .map(|(k, c)| crate::ownership::OwnedBlock {
            key: *k,
            len: 0,
            time: c[0].time,
        })
        .collect();
    let now = crate::ownership::now_ms();
    // Within the grace period nothing is an orphan.
    assert!(v.orphans(&listed, 60_000, now).await.unwrap().is_empty());
    // After it, only the block nothing refers to.
    let orphans = v.orphans(&listed, 0, now + 1).await.unwrap();
    assert_eq!(orphans, vec![key]);
    v.release_now(orphans).await.unwrap();
    assert!(!held_blocks(&store).contains(&key));
    assert_eq!(held_blocks(&store), f.state.obj.blocks());
    let mut g = OpenFile::open(&v, f.link.clone()).await.unwrap();
    assert_eq!(g.read(&v, 0, 2 * MIB).await.unwrap(), vec![5u8; 2 * MIB]);
}

#[tokio::test]
async fn a_reader_of_a_replaced_version_reads_the_new_one() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[6; 32]), vault_on(&store, &[6; 32]));
    let mut fa = new_file(&a, b"read").await;
    fa.write(&a, 0, &vec![1u8; 2 * MIB]).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    // B has the file open at that version; A rewrites it whole, and the
    // old blocks are released.
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    fa.write(&a, 0, &vec![2u8; 2 * MIB]).await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    a.settle_all().await.unwrap();
    assert_eq!(fb.read(&b, 0, 2 * MIB).await.unwrap(), vec![2u8; 2 * MIB]);
}

/// The whole content of file `name` in the root, as stored now.
async fn content_of(v: &Arc<Vault<MemStore>>, name: &[u8]) -> Vec<u8> {
    let root = v.load(&v.root()).await.unwrap();
    let link = root.obj.entry(name).unwrap();
    let mut f = OpenFile::open(v, link).await.unwrap();
    let n = f.size() as usize;
    f.read(v, 0, n).await.unwrap()
}

/// The names in the root whose name starts with `prefix`.
async fn names_like(v: &Arc<Vault<MemStore>>, prefix: &[u8]) -> Vec<Vec<u8>> {
    v.settle_all().await.unwrap();
    let root = v.load(&v.root()).await.unwrap();
    root.obj
        .entries()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}

/// Two machines append to one file from the same version: the first
/// close keeps the name, the second close's content becomes a conflict
/// copy next to it, and both closes succeed. For a small file (bytes in
/// the record) and a larger one (bytes in blocks).
#[tokio::test]
async fn colliding_saves_keep_the_losers_content_as_a_conflict_copy() {
    for start in [b"line 1\n".to_vec(), vec![b'x'; 3 * CHUNK_SIZE / 2]] {
        let store = Arc::new(MemStore::default());
        let (a, b) = (vault_on(&store, &[6; 32]), vault_on(&store, &[6; 32]));
        b.conflicts.set_machine("machine-b");
        let mut fa = new_file(&a, b"notes.txt").await;
        fa.write(&a, 0, &start).await.unwrap();
        fa.flush(&a, Durability::Later).await.unwrap();
        let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
        let end = start.len() as u64;
        fa.write(&a, end, b"from A\n").await.unwrap();
        fb.write(&b, end, b"from B\n").await.unwrap();
        fa.set_place(a.root(), b"notes.txt".to_vec());
        fb.set_place(b.root(), b"notes.txt".to_vec());
        fa.flush(&a, Durability::Later).await.unwrap();
        assert_eq!(fa.take_conflict(), None);
        fb.flush(&b, Durability::Later).await.unwrap();
        let Some(Conflicted::Copied(copy)) = fb.take_conflict() else {
            panic!("no conflict copy");
        };
        let copy_s = String::from_utf8(copy.clone()).unwrap();
        assert!(
            copy_s.starts_with("notes.conflict-machine-b-") && copy_s.ends_with(".txt"),
            "{copy_s}"
        );
        let with = |tail: &[u8]| [&start[..], tail].concat();
        assert_eq!(content_of(&a, b"notes.txt").await, with(b"from A\n"));
        assert_eq!(content_of(&a, &copy).await, with(b"from B\n"));
        assert_eq!(names_like(&a, b"notes").await.len(), 2);
        // B's open file is the winner's version now, and reads as such.
        assert_eq!(fb.size(), end + 7);
        assert_eq!(fb.read(&b, end, 7).await.unwrap(), b"from A\n");
    }
}

/// A collision with nowhere to put a copy (no place given) fails the
/// flush instead of dropping either side.
#[tokio::test]
async fn a_collision_without_a_place_fails_the_flush() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[7; 32]), vault_on(&store, &[7; 32]));
    let mut fa = new_file(&a, b"f").await;
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    fa.write(&a, 0, b"A").await.unwrap();
    fb.write(&b, 0, b"B").await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    assert!(matches!(
        fb.flush(&b, Durability::Later).await,
        Err(FsError::Conflict(_))
    ));
    assert_eq!(content_of(&a, b"f").await, b"A");
}

/// Small edits of different bytes from two machines merge without a
/// copy, and saves that follow each other (each machine opening after
/// the other's close, or one machine saving 1000 times) never make one.
#[tokio::test]
async fn disjoint_and_sequential_saves_make_no_conflict_copy() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (vault_on(&store, &[8; 32]), vault_on(&store, &[8; 32]));
    let mut fa = new_file(&a, b"cfg").await;
    fa.write(&a, 0, b"aaaa----bbbb").await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    let mut fb = OpenFile::open(&b, fa.link.clone()).await.unwrap();
    for f in [&mut fa, &mut fb] {
        f.set_place(a.root(), b"cfg".to_vec());
    }
    fa.write(&a, 0, b"A").await.unwrap();
    fb.write(&b, 11, b"B").await.unwrap();
    fb.write(&b, 12, b"+tail").await.unwrap();
    fa.flush(&a, Durability::Later).await.unwrap();
    fb.flush(&b, Durability::Later).await.unwrap();
    assert_eq!(fb.take_conflict(), None);
    assert_eq!(content_of(&a, b"cfg").await, b"Aaaa----bbbB+tail");
    // Alternating machines, each opening after the other's close.
    for i in 0..20u8 {
        let (v, mut f) = if i % 2 == 0 {
            (&a, OpenFile::open(&a, fa.link.clone()).await.unwrap())
        } else {
            (&b, OpenFile::open(&b, fa.link.clone()).await.unwrap())
        };
        f.set_place(v.root(), b"cfg".to_vec());
        let end = f.size();
        f.write(v, end, &[b'0' + i % 10]).await.unwrap();
        f.flush(v, Durability::Later).await.unwrap();
        assert_eq!(f.take_conflict(), None);
    }
    // One machine, 1000 saves.
    let mut f = OpenFile::open(&a, fa.link.clone()).await.unwrap();
    f.set_place(a.root(), b"cfg".to_vec());
    for i in 0..1000u64 {
        f.write(&a, i % 64, b"z").await.unwrap();
        f.flush(&a, Durability::Later).await.unwrap();
        assert_eq!(f.take_conflict(), None);
    }
    assert_eq!(names_like(&a, b"cfg").await, vec![b"cfg".to_vec()]);
}

/// A file another machine created and has not saved yet (its entry is
/// stored, its record not): a second machine that opens it and saves
/// first does so as version 2 at the owner, and whichever of the two
/// saves comes second keeps its content as a conflict copy. Both orders.
#[tokio::test]
async fn two_first_saves_of_a_new_file_keep_both() {
    for creator_first in [true, false] {
        let store = Arc::new(MemStore::default());
        let (a, b) = (vault_on(&store, &[9; 32]), vault_on(&store, &[9; 32]));
        let (link, state, ticket) = a
            .create_pending(&a.root(), b"new.txt", Attrs::new(0o644, 0, 0))
            .await
            .unwrap();
        ticket.wait().await.unwrap();
        let mut fa = OpenFile::from_state(link.clone(), state);
        let mut fb = OpenFile::open(&b, link).await.unwrap();
        fa.set_place(a.root(), b"new.txt".to_vec());
        fb.set_place(b.root(), b"new.txt".to_vec());
        fa.write(&a, 0, b"from the creator").await.unwrap();
        fb.write(&b, 0, b"from the other").await.unwrap();
        let (first, second) = if creator_first {
            fa.flush(&a, Durability::Later).await.unwrap();
            fb.flush(&b, Durability::Later).await.unwrap();
            (fa.take_conflict(), fb.take_conflict())
        } else {
            fb.flush(&b, Durability::Later).await.unwrap();
            fa.flush(&a, Durability::Later).await.unwrap();
            (fb.take_conflict(), fa.take_conflict())
        };
        assert_eq!(first, None);
        let Some(Conflicted::Copied(copy)) = second else {
            panic!("no conflict copy ({creator_first})");
        };
        let (won, lost): (&[u8], &[u8]) = if creator_first {
            (b"from the creator", b"from the other")
        } else {
            (b"from the other", b"from the creator")
        };
        assert_eq!(content_of(&a, b"new.txt").await, won);
        assert_eq!(content_of(&a, &copy).await, lost);
    }
}

/// Timing, not a bound (run with `--release -- --ignored --nocapture`):
/// the time of a random 4 KiB write + `fsync` as a file's extents grow
/// from its 64 chunks to thousands. Checks the content at the end.
#[tokio::test]
#[ignore]
async fn time_fsyncs_as_extents_grow() {
    let store = Arc::new(MemStore::default());
    let v = vault_on(&store, &[1; 32]);
    let mut rng = StdRng::seed_from_u64(2);
    let mut f = new_file(&v, b"db").await;
    let mut model = random(&mut rng, 64 * MIB);
    for (i, piece) in model.chunks(MIB).enumerate() {
        f.write(&v, (i * MIB) as u64, piece).await.unwrap();
    }
    f.flush(&v, Durability::Now).await.unwrap();
    for round in 0..8 {
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let off = rng.gen_range(0..16 * 1024) * 4096;
            let d = random(&mut rng, 4096);
            f.write(&v, off as u64, &d).await.unwrap();
            f.flush(&v, Durability::Now).await.unwrap();
            model[off..off + 4096].copy_from_slice(&d);
        }
        let extents = f.state.obj.content().map_or(0, |c| c.extents.len());
        println!(
            "round {round}: {:.3} ms per write + fsync, {extents} extents",
            t.elapsed().as_secs_f64()
        );
    }
    let back = f.read(&v, 0, 64 * MIB).await.unwrap();
    assert!(back == model, "the file reads as written");
}

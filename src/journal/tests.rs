//! A mount cut off from its ring: writes go to the journal at local speed,
//! reads come from the journal and the caches, and the replay after the
//! heal meets what another machine wrote meanwhile through the merge rules.

use super::*;
use crate::fs::mem_store::MemStore;
use crate::fs::merge_tests::write;
use crate::fs::object::Body;
use crate::fs::{Identity, OpenFile, Vault};
use std::sync::atomic::{AtomicBool, Ordering};

/// One machine's way into a ring shared with others (a [`MemStore`]),
/// counted as its own writer. While `online` is false it is a ring of one
/// that holds nothing: reads find nothing, writes fail.
struct Machine {
    ring: Arc<MemStore>,
    writer: u64,
    online: Arc<AtomicBool>,
}

impl Machine {
    fn cut(&self) -> bool {
        !self.online.load(Ordering::SeqCst)
    }
}

fn unreachable() -> FsError {
    FsError::Unavailable("cut off".into())
}

impl BlockStore for Machine {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        d: Durability,
    ) -> Result<Id, FsError> {
        if self.cut() {
            return Err(unreachable());
        }
        self.ring.put_block(key, data, claim, d).await
    }
    async fn release(&self, rel: Release) -> Result<(), FsError> {
        self.ring.release(rel).await
    }
    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        self.ring.space(owner).await
    }
    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        if self.cut() {
            return Err(FsError::NotFound);
        }
        self.ring.get_block(key).await
    }
    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        d: Durability,
    ) -> Result<(), FsError> {
        if self.cut() {
            return Err(unreachable());
        }
        self.ring.put_record(rec, expected_seq, d).await
    }
    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        if self.cut() {
            return Ok(Vec::new());
        }
        self.ring.get_versions(key).await
    }
    async fn writer(&self) -> Result<u64, FsError> {
        Ok(self.writer)
    }
    async fn sync(&self) -> Result<(), FsError> {
        Ok(())
    }
}

struct Offline {
    online: Arc<AtomicBool>,
    vault: Arc<Vault<JournalStore<Machine>>>,
    _dir: tempfile::TempDir,
}

/// A machine with its journal and record cache in `dir`, online if
/// `online`.
fn journaled_at(
    ring: &Arc<MemStore>,
    dir: &std::path::Path,
    online: bool,
) -> (Arc<AtomicBool>, Arc<Vault<JournalStore<Machine>>>) {
    journaled_with(ring, dir, online, None)
}

/// [`journaled_at`], in write-back mode if `wb` is given.
fn journaled_with(
    ring: &Arc<MemStore>,
    dir: &std::path::Path,
    online: bool,
    wb: Option<WriteBack>,
) -> (Arc<AtomicBool>, Arc<Vault<JournalStore<Machine>>>) {
    let online = Arc::new(AtomicBool::new(online));
    let flag = Arc::clone(&online);
    let store = JournalStore::new(
        Machine {
            ring: Arc::clone(ring),
            writer: 1,
            online: Arc::clone(&online),
        },
        Journal::open(&dir.join("journal")).unwrap(),
        RecordCache::open(&dir.join("records"), 1 << 24).unwrap(),
        Arc::new(move || flag.load(Ordering::SeqCst)),
    );
    let store = match wb {
        Some(wb) => store.with_write_back(wb),
        None => store,
    };
    let vault = Vault::new(Arc::new(store), Identity::from_secret([5; 32]));
    (online, vault)
}

fn journaled(ring: &Arc<MemStore>, dir: tempfile::TempDir) -> Offline {
    let (online, vault) = journaled_at(ring, dir.path(), true);
    Offline {
        online,
        vault,
        _dir: dir,
    }
}

fn direct(ring: &Arc<MemStore>) -> Arc<Vault<Machine>> {
    Vault::new(
        Arc::new(Machine {
            ring: Arc::clone(ring),
            writer: 2,
            online: Arc::new(AtomicBool::new(true)),
        }),
        Identity::from_secret([5; 32]),
    )
}

async fn names<S: BlockStore>(v: &Arc<Vault<S>>) -> Vec<String> {
    match v.load(&v.root()).await.unwrap().obj.body {
        Body::Dir { entries } => {
            let mut n: Vec<String> = entries
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            n.sort();
            n
        }
        _ => panic!("root is not a directory"),
    }
}

async fn read<S: BlockStore>(v: &Arc<Vault<S>>, name: &str) -> Result<Vec<u8>, FsError> {
    let (link, _) = v.resolve(name).await?;
    let mut f = OpenFile::open(v, link).await?;
    let n = f.size() as usize;
    f.read(v, 0, n).await
}

#[tokio::test]
async fn offline_writes_are_journaled_read_back_and_replayed() {
    let ring = Arc::new(MemStore::default());
    let m = journaled(&ring, tempfile::tempdir().unwrap());
    write(&m.vault, b"before.txt", b"written online").await;
    m.online.store(false, Ordering::SeqCst);
    let puts = ring.puts.load(Ordering::SeqCst);
    write(&m.vault, b"offline.txt", b"written offline").await;
    write(&m.vault, b"before.txt", b"changed offline").await;
    // Nothing reached the ring; the mount reads its own writes.
    assert_eq!(ring.puts.load(Ordering::SeqCst), puts);
    assert!(m.vault.store.journal_size().entries > 0);
    assert_eq!(
        read(&m.vault, "offline.txt").await.unwrap(),
        b"written offline"
    );
    assert_eq!(
        read(&m.vault, "before.txt").await.unwrap(),
        b"changed offline"
    );
    // The other machine does not see them yet.
    let other = direct(&ring);
    assert_eq!(names(&other).await, vec!["before.txt"]);
    // Back in contact: the replay empties the journal into the ring.
    m.online.store(true, Ordering::SeqCst);
    assert!(m.vault.store.replay().await.unwrap() > 0);
    assert!(m.vault.store.journal.is_empty());
    let other = direct(&ring);
    assert_eq!(names(&other).await, vec!["before.txt", "offline.txt"]);
    assert_eq!(
        read(&other, "offline.txt").await.unwrap(),
        b"written offline"
    );
    assert_eq!(
        read(&other, "before.txt").await.unwrap(),
        b"changed offline"
    );
}

#[tokio::test]
async fn what_was_never_read_is_unavailable_offline_not_absent() {
    let ring = Arc::new(MemStore::default());
    let other = direct(&ring);
    write(&other, b"seen.txt", b"read once").await;
    write(&other, b"unseen.txt", b"never read here").await;
    let m = journaled(&ring, tempfile::tempdir().unwrap());
    assert_eq!(read(&m.vault, "seen.txt").await.unwrap(), b"read once");
    m.online.store(false, Ordering::SeqCst);
    // The root and seen.txt's record come from the record cache (its
    // blocks would come from the block cache, which a mount has in front;
    // here they are small enough to live in the record), but unseen.txt's
    // record was never read: out of reach, not absent.
    assert_eq!(
        names(&m.vault).await,
        vec!["seen.txt".to_string(), "unseen.txt".to_string()]
    );
    assert!(matches!(
        read(&m.vault, "unseen.txt").await,
        Err(FsError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_journal_survives_a_restart_and_meets_concurrent_edits_as_conflict_copies() {
    let ring = Arc::new(MemStore::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    {
        let (online, v) = journaled_at(&ring, &path, true);
        write(&v, b"shared.txt", b"base").await;
        online.store(false, Ordering::SeqCst);
        write(&v, b"shared.txt", b"edited offline").await;
        write(&v, b"new-offline.txt", b"made offline").await;
        v.store.sync().await.unwrap();
        // The machine stops here (its data directory stays).
    }
    // Meanwhile, the other machine edits the same file and adds one.
    let other = direct(&ring);
    write(&other, b"shared.txt", b"edited on the ring").await;
    write(&other, b"new-ring.txt", b"made on the ring").await;
    // Restarted, still cut off: the journal is read back from disk.
    let (online, v) = journaled_at(&ring, &path, false);
    assert_eq!(read(&v, "shared.txt").await.unwrap(), b"edited offline");
    assert_eq!(read(&v, "new-offline.txt").await.unwrap(), b"made offline");
    online.store(true, Ordering::SeqCst);
    v.store.replay().await.unwrap();
    assert!(v.store.journal.is_empty());
    // Every write of both machines is there, the edit of one file on both
    // as a conflict copy.
    let other = direct(&ring);
    // Reading the root merges it and resolves the file in the background.
    names(&other).await;
    other.settle_merges().await;
    other.settle_dir(&other.root()).await;
    let seen = names(&other).await;
    assert!(seen.contains(&"new-offline.txt".to_string()), "{seen:?}");
    assert!(seen.contains(&"new-ring.txt".to_string()), "{seen:?}");
    let copies: Vec<&String> = seen.iter().filter(|n| n.contains(".conflict-")).collect();
    assert_eq!(copies.len(), 1, "{seen:?}");
    let mut contents = vec![
        read(&other, "shared.txt").await.unwrap(),
        read(&other, copies[0]).await.unwrap(),
    ];
    contents.sort();
    assert_eq!(
        contents,
        vec![b"edited offline".to_vec(), b"edited on the ring".to_vec()]
    );
    assert_eq!(
        read(&other, "new-ring.txt").await.unwrap(),
        b"made on the ring"
    );
    assert_eq!(
        read(&other, "new-offline.txt").await.unwrap(),
        b"made offline"
    );
}

fn ring_blocks(ring: &MemStore) -> std::collections::HashSet<Id> {
    ring.blocks.lock().unwrap().keys().copied().collect()
}

#[tokio::test]
async fn write_back_journals_while_online_and_the_replay_sends_records_then_releases() {
    let ring = Arc::new(MemStore::default());
    let dir = tempfile::tempdir().unwrap();
    let (_online, v) = journaled_with(&ring, dir.path(), true, Some(WriteBack::default()));
    // Content in a block, under the size that goes straight to the ring.
    let first = vec![1u8; 100_000];
    write(&v, b"a.bin", &first).await;
    assert_eq!(
        ring.block_puts(),
        0,
        "online, yet nothing sent before the replay"
    );
    assert!(v.store.journal_size().entries > 0);
    assert_eq!(read(&v, "a.bin").await.unwrap(), first);
    assert!(v.store.replay().await.unwrap() > 0);
    assert!(v.store.journal.is_empty());
    let other = direct(&ring);
    assert_eq!(read(&other, "a.bin").await.unwrap(), first);
    let old = ring_blocks(&ring);
    assert!(!old.is_empty());

    // A block, the record that stops using it, and its release, journaled
    // in that order: the replay puts the block, then the record, then
    // frees the block.
    let sk = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let data = b"a block, soon released".to_vec();
    let bkey = Id::hash(&data);
    v.store
        .put_block(bkey, data, Claim::sign(&sk, bkey, 1), Durability::Later)
        .await
        .unwrap();
    let r = Record::sign(&sk, b"r", 1, Some(b"no longer uses it".to_vec()));
    v.store
        .put_record(r.clone(), Some(0), Durability::Later)
        .await
        .unwrap();
    v.store
        .release(Release::sign(&sk, vec![bkey], 2))
        .await
        .unwrap();
    assert_eq!(ring_blocks(&ring), old, "nothing sent before the replay");
    v.store.replay().await.unwrap();
    assert!(v.store.journal.is_empty());
    assert_eq!(ring_blocks(&ring), old, "the block was put, then freed");
    assert_eq!(ring.get_versions(r.key()).await.unwrap(), vec![r]);
}

#[tokio::test]
async fn a_replayed_record_that_meets_an_unseen_version_withholds_later_releases() {
    let ring = Arc::new(MemStore::default());
    let dir = tempfile::tempdir().unwrap();
    let (_online, v) = journaled_with(&ring, dir.path(), true, Some(WriteBack::default()));
    let store = &v.store;
    let sk = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let key_of = |name: &[u8]| Record::sign(&sk, name, 1, None).key();
    // This machine saw version 1 of a record; another writer then put 2.
    let v1 = Record::sign(&sk, b"r", 1, Some(b"one".to_vec()));
    store
        .put_record(v1, Some(0), Durability::Later)
        .await
        .unwrap();
    store.replay().await.unwrap();
    let theirs = Record::sign(&sk, b"r", 2, Some(b"theirs".to_vec()));
    ring.put_record(theirs, Some(1), Durability::Later)
        .await
        .unwrap();
    // Ours builds on 1 (journaled: judged against what this machine knows),
    // then a release of a block the ring holds.
    let data = b"a block".to_vec();
    let bkey = Id::hash(&data);
    let claim = Claim::sign(&sk, bkey, 1);
    ring.put_block(bkey, data, claim, Durability::Later)
        .await
        .unwrap();
    let ours = Record::sign(&sk, b"r", 2, Some(b"ours".to_vec()));
    store
        .put_record(ours, Some(1), Durability::Later)
        .await
        .unwrap();
    let rel = Release::sign(&sk, vec![bkey], 2);
    store.release(rel).await.unwrap();
    store.replay().await.unwrap();
    assert!(store.journal.is_empty());
    // The release was not sent: a merge may still refer to the block.
    assert!(ring_blocks(&ring).contains(&bkey));
    assert!(!ring.get_versions(key_of(b"r")).await.unwrap().is_empty());
}

/// A removal builds on the version this machine kept (no read) when it is
/// still the ring's; when another machine changed the file meanwhile, the
/// kept one is stale: its compare-and-swap fails, and the removal reads
/// the ring and trashes what is there, not what this machine last saw.
#[tokio::test]
async fn a_removal_over_a_stale_kept_version_trashes_the_newest() {
    let ring = Arc::new(MemStore::default());
    let m = journaled(&ring, tempfile::tempdir().unwrap());
    let other = direct(&ring);
    write(&m.vault, b"kept.txt", b"mine").await;
    write(&m.vault, b"changed.txt", b"mine").await;
    write(&other, b"changed.txt", b"theirs, later").await;
    let (kept, _) = m.vault.resolve("/kept.txt").await.unwrap();
    let key = Identity::from_secret([5; 32]).record_key(&kept.name);
    ring.record_reads.lock().unwrap().clear();
    let root = m.vault.root();
    m.vault
        .remove(&root, b"kept.txt", false, Some("/kept.txt"))
        .await
        .unwrap();
    assert!(
        !ring.record_reads.lock().unwrap().contains(&key),
        "the kept version was used: the file's record was not read"
    );
    m.vault
        .remove(&root, b"changed.txt", false, Some("/changed.txt"))
        .await
        .unwrap();
    m.vault.settle_all().await.unwrap();
    let items = m.vault.trash_items().await.unwrap();
    let mut sizes: Vec<(String, u64)> = items.iter().map(|i| (i.path.clone(), i.size)).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            ("/changed.txt".to_string(), b"theirs, later".len() as u64),
            ("/kept.txt".to_string(), 4)
        ]
    );
    assert_eq!(
        m.vault.trash_restore("/changed.txt", None).await.unwrap(),
        "/changed.txt"
    );
    assert_eq!(
        read(&m.vault, "/changed.txt").await.unwrap(),
        b"theirs, later"
    );
}

/// Cut off, a record's compare-and-swap is judged by the journal. Writers
/// that all build on one version race: exactly one may win, or the last
/// journaled would silently hide the others' changes (a directory entry
/// made offline vanished after a crash this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_swaps_of_one_version_offline_let_exactly_one_win() {
    let ring = Arc::new(MemStore::default());
    let m = journaled(&ring, tempfile::tempdir().unwrap());
    let sk = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    for round in 0..20u64 {
        let seq = 2 * round;
        let base = Record::sign(&sk, b"r", seq + 1, Some(b"base".to_vec()));
        m.vault
            .store
            .put_record(base, (seq > 0).then_some(seq), Durability::Later)
            .await
            .unwrap();
        m.online.store(false, Ordering::SeqCst);
        let tries = (0..8u8).map(|i| {
            let v = Arc::clone(&m.vault);
            let rec = Record::sign(&sk, b"r", seq + 2, Some(vec![i]));
            tokio::spawn(async move {
                v.store
                    .put_record(rec, Some(seq + 1), Durability::Now)
                    .await
            })
        });
        let mut won = 0;
        for t in tries.collect::<Vec<_>>() {
            match t.await.unwrap() {
                Ok(()) => won += 1,
                Err(FsError::Conflict(Some(s))) => assert_eq!(s, seq + 2),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(won, 1, "round {round}: {won} writers of one version won");
    }
}

/// A ring that counts how it is asked (lazy and durable puts, ordered
/// ones among the lazy, syncs) and can be made to refuse puts, be out of
/// reach, or fail to make the copies that follow an ordered put.
#[derive(Default)]
struct Counting {
    ring: MemStore,
    lazy: std::sync::atomic::AtomicUsize,
    durable: std::sync::atomic::AtomicUsize,
    ordered: std::sync::atomic::AtomicUsize,
    syncs: std::sync::atomic::AtomicUsize,
    fail: Mutex<Option<FsError>>,
    fail_following: Mutex<Option<FsError>>,
}

impl Counting {
    fn count(&self, d: Durability) -> Result<(), FsError> {
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        match d {
            Durability::Later => self.lazy.fetch_add(1, Ordering::SeqCst),
            Durability::Now => self.durable.fetch_add(1, Ordering::SeqCst),
        };
        Ok(())
    }
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.lazy.load(Ordering::SeqCst),
            self.durable.load(Ordering::SeqCst),
            self.syncs.load(Ordering::SeqCst),
        )
    }
}

impl BlockStore for Counting {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        d: Durability,
    ) -> Result<Id, FsError> {
        self.count(d)?;
        self.ring.put_block(key, data, claim, d).await
    }
    async fn release(&self, rel: Release) -> Result<(), FsError> {
        self.ring.release(rel).await
    }
    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        self.ring.space(owner).await
    }
    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        self.ring.get_block(key).await
    }
    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        d: Durability,
    ) -> Result<(), FsError> {
        self.count(d)?;
        self.ring.put_record(rec, expected_seq, d).await
    }
    async fn put_record_ordered(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
    ) -> Result<Following, FsError> {
        self.count(Durability::Later)?;
        self.ordered.fetch_add(1, Ordering::SeqCst);
        self.ring
            .put_record(rec, expected_seq, Durability::Later)
            .await?;
        let outcome = self.fail_following.lock().unwrap().clone();
        Ok(Following::of(async move { outcome.map_or(Ok(()), Err) }))
    }
    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        self.ring.get_versions(key).await
    }
    async fn writer(&self) -> Result<u64, FsError> {
        Ok(1)
    }
    async fn sync(&self) -> Result<(), FsError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn counting_store(dir: &std::path::Path) -> JournalStore<Counting> {
    JournalStore::new(
        Counting::default(),
        Journal::open(&dir.join("journal")).unwrap(),
        RecordCache::open(&dir.join("records"), 1 << 24).unwrap(),
        Arc::new(|| true),
    )
}

fn signed(name: &str, seq: u64) -> Record {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    Record::sign(&sk, name.as_bytes(), seq, Some(vec![seq as u8; 64]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_put_goes_to_the_ring_lazily_and_the_journal_keeps_it_until_a_settle() {
    let dir = tempfile::tempdir().unwrap();
    let s = counting_store(dir.path());
    let rec = signed("f", 1);
    s.put_record(rec.clone(), Some(0), Durability::Now)
        .await
        .unwrap();
    let data = vec![7u8; 4096];
    let key = Id::hash(&data);
    let claim = Claim::sign(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]), key, 1);
    s.put_block(key, data, claim, Durability::Now)
        .await
        .unwrap();
    // On the ring, lazily (the record in order); kept by the journal, out
    // of the replay's sight.
    assert_eq!(s.inner.counts(), (2, 0, 0));
    assert_eq!(s.inner.ordered.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.inner.ring.get_versions(rec.key()).await.unwrap(),
        vec![rec]
    );
    assert_eq!(s.journal.sent(), 2);
    assert!(s.journal.is_empty());
    assert!(!s.journaling());
    // An fsync's closing sync has nothing left for the ring to sync.
    s.sync().await.unwrap();
    assert_eq!(s.inner.counts(), (2, 0, 0));
    // The settle syncs the ring once for both, and drops the entries.
    s.settle().await.unwrap();
    assert_eq!(s.inner.counts(), (2, 0, 1));
    assert_eq!(s.journal.sent(), 0);
    assert!(
        std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("seg-"))
    );
    // A lazy put no journal entry covers makes the next sync sync the ring.
    s.put_record(signed("g", 1), Some(0), Durability::Later)
        .await
        .unwrap();
    s.sync().await.unwrap();
    assert_eq!(s.inner.counts(), (3, 0, 2));
    s.sync().await.unwrap();
    assert_eq!(s.inner.counts(), (3, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_durable_put_leaves_nothing_journaled_and_one_out_of_reach_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let s = counting_store(dir.path());
    *s.inner.fail.lock().unwrap() = Some(FsError::Conflict(Some(3)));
    let e = s.put_record(signed("f", 4), Some(3), Durability::Now).await;
    assert_eq!(e, Err(FsError::Conflict(Some(3))));
    assert_eq!(s.journal.sent(), 0);
    assert!(s.journal.is_empty());
    drop(s);
    // Nothing comes back at a restart either.
    let s = counting_store(dir.path());
    assert!(s.journal.is_empty());
    // Out of reach: journaled for the replay (it judges the swap against
    // what this machine knows: nothing, so expect 0).
    *s.inner.fail.lock().unwrap() = Some(unreachable());
    let rec = signed("h", 1);
    s.put_record(rec.clone(), Some(0), Durability::Now)
        .await
        .unwrap();
    assert_eq!(s.journal.sent(), 0);
    assert_eq!(s.journal.record(rec.key()), Some(rec));
    assert!(s.journaling());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_crash_left_before_the_settle_are_replayed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let rec = signed("f", 1);
    {
        let s = counting_store(dir.path());
        s.put_record(rec.clone(), Some(0), Durability::Now)
            .await
            .unwrap();
        assert_eq!(s.journal.sent(), 1);
        // No settle: the node stops here.
    }
    let s = counting_store(dir.path());
    assert_eq!(s.journal.record(rec.key()), Some(rec.clone()));
    // This ring lost it (a member that crashed before its flush): the
    // replay puts it again, then syncs, and the journal empties.
    assert_eq!(s.replay().await.unwrap(), 1);
    assert_eq!(
        s.inner.ring.get_versions(rec.key()).await.unwrap(),
        vec![rec]
    );
    assert!(s.journal.is_empty());
    assert_eq!(s.inner.counts().2, 1);
}

/// The copies that follow an ordered put could not all be made: the
/// settle hands its entry to the replay instead of dropping it, and the
/// replay sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_copies_could_not_all_be_made_is_sent_again_by_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let s = counting_store(dir.path());
    *s.inner.fail_following.lock().unwrap() = Some(unreachable());
    let rec = signed("f", 1);
    s.put_record(rec.clone(), Some(0), Durability::Now)
        .await
        .unwrap();
    assert_eq!(s.inner.ordered.load(Ordering::SeqCst), 1);
    assert_eq!(s.journal.sent(), 1);
    assert!(s.journal.is_empty());
    s.settle().await.unwrap();
    assert_eq!(s.journal.sent(), 0, "no longer waiting for a sync");
    assert_eq!(s.journal.record(rec.key()), Some(rec.clone()), "but kept");
    assert_eq!(s.journal.size().entries, 1);
    assert!(s.journaling(), "later writes queue behind it");
    *s.inner.fail_following.lock().unwrap() = None;
    let (lazy, durable, _) = s.inner.counts();
    assert_eq!(s.replay().await.unwrap(), 1);
    assert!(s.journal.is_empty());
    assert!(
        s.inner.counts().0 + s.inner.counts().1 > lazy + durable,
        "put again"
    );
    assert_eq!(
        s.inner.ring.get_versions(rec.key()).await.unwrap(),
        vec![rec.clone()]
    );
    // Nothing of it is left for a restart.
    drop(s);
    assert!(counting_store(dir.path()).journal.is_empty());
}

//! The request machines driven by [`Dht`] over a fake ring of in-memory
//! stores whose members can be made to fail, answer late, lie or run out
//! of space; and [`Locate`](super::locate::Locate) over a scripted ring.

use super::locate::{CacheUse, Locate};
use super::machine::run_sync;
use super::*;
use crate::chord::RingView;
use crate::node::{apply_replica, remote_error};
use crate::rpc::Rpc;
use crate::store::Store;
use crate::wire::{ChordRequest, ChordResponse, ReplicaRequest, ReplicaResponse, Response};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering::SeqCst;

/// Puts `data` as a block owned by a fixed test owner.
async fn put_owned<T: Transport>(d: &Dht<T>, data: Vec<u8>) -> Result<(Id, u32), DhtError> {
    let owner = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let claim = Claim::sign(&owner, Id::hash(&data), 1);
    d.put_block(data, claim).await
}
use std::time::Instant;

/// A ring of in-memory stores seen from one of them.
struct Fake {
    stores: Vec<(Peer, Store)>,
    /// The node this transport runs in (index into `stores`).
    me: usize,
    /// Members the local view still lists (the ring drops the rest).
    listed: Mutex<Vec<Id>>,
    down: Mutex<Vec<Id>>,
    /// Calls to these nodes fail this many more times, then succeed.
    flaky: Mutex<HashMap<Id, u32>>,
    corrupt: Mutex<HashMap<Id, Vec<u8>>>,
    full: Mutex<HashSet<Id>>,
    /// Nodes asked for a block, in order.
    fetched_from: Mutex<Vec<Id>>,
    /// Record puts, in order: the node, whether durable, the expected
    /// sequence number.
    record_puts: Mutex<Vec<(Id, bool, Option<u64>)>>,
    /// While set, a `Sync` call waits for a permit of it.
    hold_syncs: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// `Sync` calls received.
    syncs: std::sync::atomic::AtomicUsize,
    /// While set, a block's read or store yields before it is answered,
    /// so that the calls a machine starts together are in flight together.
    slow_copies: std::sync::atomic::AtomicBool,
    /// Block reads and stores in flight now, and at most so far.
    copies: std::sync::atomic::AtomicUsize,
    copies_peak: std::sync::atomic::AtomicUsize,
    routes: RouteCache,
    started: Instant,
    _dirs: Vec<tempfile::TempDir>,
}

impl Fake {
    fn new(n: usize) -> Fake {
        let mut stores = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let d = tempfile::tempdir().unwrap();
            let mut id = [0u8; 32];
            id[0] = (i as u8 + 1) * 40;
            stores.push((
                Peer {
                    id: Id(id),
                    addr: format!("fake:{i}"),
                },
                Store::open(d.path()).unwrap(),
            ));
            dirs.push(d);
        }
        let listed = stores.iter().map(|s| s.0.id).collect();
        Fake {
            stores,
            me: 0,
            listed: Mutex::new(listed),
            down: Mutex::new(Vec::new()),
            flaky: Mutex::new(HashMap::new()),
            corrupt: Mutex::new(HashMap::new()),
            full: Mutex::new(HashSet::new()),
            fetched_from: Mutex::new(Vec::new()),
            record_puts: Mutex::new(Vec::new()),
            hold_syncs: Mutex::new(None),
            syncs: Default::default(),
            slow_copies: Default::default(),
            copies: Default::default(),
            copies_peak: Default::default(),
            routes: RouteCache::default(),
            started: Instant::now(),
            _dirs: dirs,
        }
    }

    fn peer(&self, i: usize) -> Peer {
        self.stores[i].0.clone()
    }

    fn holders(&self, key: Id) -> Vec<usize> {
        (0..self.stores.len())
            .filter(|&i| {
                self.stores[i].1.get_block(key).unwrap().is_some()
                    || self.stores[i].1.get_record(key).unwrap().is_some()
            })
            .collect()
    }
}

impl Transport for Fake {
    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn view(&self) -> RingView {
        // The whole ring, from `me`, of the members still listed.
        let listed = self.listed.lock().unwrap().clone();
        let n = self.stores.len();
        let succs: Vec<Peer> = (1..n)
            .map(|d| self.peer((self.me + d) % n))
            .filter(|p| listed.contains(&p.id))
            .collect();
        RingView {
            me: self.peer(self.me),
            member: true,
            pred: succs.last().cloned(),
            succs,
            whole: true,
            fingers: Vec::new(),
        }
    }

    fn routes(&self) -> &RouteCache {
        &self.routes
    }

    async fn call(&self, to: &Peer, req: Request) -> Reply {
        let Request::Replica(req) = req else {
            return Err(CallError::Unexpected);
        };
        let _copy = if self.slow_copies.load(SeqCst)
            && matches!(
                req,
                ReplicaRequest::FetchBlock { .. } | ReplicaRequest::StoreBlock { .. }
            ) {
            let now = self.copies.fetch_add(1, SeqCst) + 1;
            self.copies_peak.fetch_max(now, SeqCst);
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            Some(InFlight(&self.copies))
        } else {
            None
        };
        if matches!(req, ReplicaRequest::FetchBlock { .. }) {
            self.fetched_from.lock().unwrap().push(to.id);
        }
        if matches!(req, ReplicaRequest::Sync) {
            self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let hold = self.hold_syncs.lock().unwrap().clone();
            if let Some(h) = hold {
                h.acquire().await.unwrap().forget();
            }
        }
        if let ReplicaRequest::StoreRecord {
            durable,
            expected_seq,
            ..
        } = &req
        {
            self.record_puts
                .lock()
                .unwrap()
                .push((to.id, *durable, *expected_seq));
        }
        if self.down.lock().unwrap().contains(&to.id) {
            return Err(CallError::Unreachable("down".into()));
        }
        if let Some(n) = self.flaky.lock().unwrap().get_mut(&to.id)
            && *n > 0
        {
            *n -= 1;
            return Err(CallError::Timeout);
        }
        if self.full.lock().unwrap().contains(&to.id)
            && matches!(
                req,
                ReplicaRequest::StoreBlock { .. } | ReplicaRequest::StoreRecord { .. }
            )
        {
            return Err(CallError::Refused(RemoteError::NoSpace(format!(
                "{}: disk full",
                to.addr
            ))));
        }
        if let Some(bad) = self.corrupt.lock().unwrap().get(&to.id)
            && matches!(req, ReplicaRequest::FetchBlock { .. })
        {
            return Ok(Response::Replica(ReplicaResponse::Block {
                data: bad.clone(),
                claims: Vec::new(),
            }));
        }
        let store = &self.stores.iter().find(|s| s.0.id == to.id).unwrap().1;
        match apply_replica(store, req) {
            Ok(Some(r)) => Ok(Response::Replica(r)),
            Ok(None) => Err(CallError::Refused(RemoteError::NotFound)),
            Err(e) => Err(CallError::Refused(remote_error(&e))),
        }
    }

    async fn remove_local(&self, key: Id) -> Reply {
        self.stores[self.me].1.remove(key).unwrap();
        Ok(Response::Replica(ReplicaResponse::Stored))
    }
}

/// One call counted in a gauge until it is answered.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Short deadlines, for tests.
fn policy() -> Policy {
    Policy {
        put_deadline: 1_500,
        get_deadline: 1_000,
        backoff_min: 20,
        backoff_max: 100,
    }
}

fn dht(fake: Fake, r: usize) -> Dht<Fake> {
    let mut d = Dht::new(fake, r);
    d.policy = policy();
    d
}

/// A client over a shared ring of `n` (r = 3), whose siblings finish its
/// ordered puts, and a record's first version stored on it with `sk`.
async fn shared_with_a_record(
    n: usize,
    sk: &ed25519_dalek::SigningKey,
) -> (Dht<Arc<Fake>>, Record) {
    let mut d = Dht::new(Arc::new(Fake::new(n)), 3);
    d.policy = policy();
    let v1 = Record::sign(sk, b"f", 1, Some(b"one".to_vec()));
    d.put_record(v1.clone(), Some(0)).await.unwrap();
    (d, v1)
}

#[tokio::test]
async fn put_reaches_r_replicas_and_survives_a_dead_one() {
    let d = dht(Fake::new(4), 3);
    let (key, copies) = put_owned(&d, b"hello".to_vec()).await.unwrap();
    assert_eq!(copies, 3);
    assert_eq!(d.transport.holders(key).len(), 3);
    // With one replica down the node after the set takes its place.
    let set = Placement {
        key,
        from: None,
        owner: d.transport.peer(d.transport.holders(key)[0]),
        next: vec![],
        hops: 0,
        cached: false,
    };
    let down = set.owner.id;
    d.transport.down.lock().unwrap().push(down);
    let (k2, copies) = put_owned(&d, b"world".to_vec()).await.unwrap();
    assert_eq!(copies, 3);
    assert_eq!(d.transport.holders(k2).len(), 3);
    d.transport.down.lock().unwrap().clear();
    // Reads skip a corrupt copy.
    let first = d.transport.holders(key)[0];
    d.transport
        .corrupt
        .lock()
        .unwrap()
        .insert(d.transport.peer(first).id, b"junk".to_vec());
    assert_eq!(d.get_block(key).await.unwrap(), b"hello");
    assert_eq!(
        d.get_block(Id::hash(b"absent")).await,
        Err(DhtError::NotFound)
    );
}

#[tokio::test]
async fn a_put_short_of_copies_fails_at_its_deadline() {
    let d = dht(Fake::new(3), 3);
    let down = d.transport.peer(2).id;
    d.transport.down.lock().unwrap().push(down);
    let t = Instant::now();
    let r = put_owned(&d, b"x".to_vec()).await;
    assert!(
        matches!(
            r,
            Err(DhtError::TooFewReplicas {
                stored: 2,
                wanted: 3,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(1_000));
}

#[tokio::test]
async fn a_put_in_flight_while_the_ring_drops_a_crashed_node_succeeds() {
    let d = dht(Fake::new(3), 3);
    let dead = d.transport.peer(2).id;
    d.transport.down.lock().unwrap().push(dead);
    let put = put_owned(&d, b"during the crash".to_vec());
    let heal = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        d.transport.listed.lock().unwrap().retain(|id| *id != dead);
    };
    let (r, ()) = tokio::join!(put, heal);
    let (key, copies) = r.unwrap();
    assert_eq!(copies, 2, "the two live members of a two-node ring");
    assert_eq!(d.transport.holders(key), vec![0, 1]);
}

#[tokio::test]
async fn rings_smaller_than_r_store_on_every_member_at_once() {
    for n in 1..=2 {
        let d = dht(Fake::new(n), 3);
        let t = Instant::now();
        let (key, copies) = put_owned(&d, vec![n as u8; 100]).await.unwrap();
        assert_eq!(copies as usize, n);
        assert_eq!(d.transport.holders(key).len(), n);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(200),
            "no waiting on a ring of {n}"
        );
        assert_eq!(d.get_block(key).await.unwrap(), vec![n as u8; 100]);
    }
}

#[tokio::test]
async fn records_newest_wins_and_forgeries_are_refused() {
    let d = dht(Fake::new(3), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let r1 = Record::sign(&sk, b"n", 1, Some(b"one".to_vec()));
    d.put_record(r1.clone(), Some(0)).await.unwrap();
    let r2 = Record::sign(&sk, b"n", 2, Some(b"two".to_vec()));
    d.put_record(r2, Some(1)).await.unwrap();
    assert_eq!(
        d.get_record(r1.key()).await.unwrap().value.unwrap(),
        &b"two"[..]
    );
    // Stale and CAS failures are final.
    assert!(matches!(
        d.put_record(r1.clone(), None).await,
        Err(DhtError::Refused(RemoteError::Stale { .. }))
    ));
    let r3 = Record::sign(&sk, b"n", 3, Some(b"three".to_vec()));
    assert!(matches!(
        d.put_record(r3, Some(1)).await,
        Err(DhtError::Refused(RemoteError::Conflict { .. }))
    ));
    let mut forged = Record::sign(&sk, b"n", 9, Some(b"evil".to_vec()));
    forged.value = Some(bytes::Bytes::from_static(b"EVIL"));
    assert!(matches!(
        d.put_record(forged, None).await,
        Err(DhtError::Refused(RemoteError::BadSignature))
    ));
    let del = Record::sign(&sk, b"n", 4, None);
    d.delete_record(del, None).await.unwrap();
    assert_eq!(d.get_record(r1.key()).await, Err(DhtError::NotFound));
    // A fresh name: all members at once.
    let fresh = Record::sign(&sk, b"fresh", 1, Some(b"new".to_vec()));
    assert_eq!(d.put_new_record(fresh.clone(), true).await.unwrap(), 3);
    assert_eq!(d.get_record(fresh.key()).await.unwrap(), fresh);
}

#[tokio::test]
async fn a_durable_swap_has_the_owner_judge_first_then_fsync_with_the_others() {
    let d = dht(Fake::new(4), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let r1 = Record::sign(&sk, b"n", 1, Some(b"one".to_vec()));
    d.put_record(r1.clone(), Some(0)).await.unwrap();
    d.transport.record_puts.lock().unwrap().clear();
    let r2 = Record::sign(&sk, b"n", 2, Some(b"two".to_vec()));
    d.put_record(r2.clone(), Some(1)).await.unwrap();
    let puts = d.transport.record_puts.lock().unwrap().clone();
    // The owner judges the swap without fsyncing; then all three,
    // the owner again, take it durably.
    let owner = puts[0].0;
    assert_eq!(puts[0], (owner, false, Some(1)));
    let rest: HashSet<Id> = puts[1..].iter().map(|p| p.0).collect();
    assert_eq!(puts.len(), 4, "{puts:?}");
    assert!(puts[1..].iter().all(|p| p.1 && p.2.is_none()), "{puts:?}");
    assert!(rest.contains(&owner) && rest.len() == 3);
    // Nothing is left for a later Sync: every copy is durable.
    assert!(d.unsynced.lock().unwrap().is_empty());
    assert_eq!(d.transport.holders(r2.key()).len(), 3);
    // A lost swap is refused by the owner, and goes no further.
    d.transport.record_puts.lock().unwrap().clear();
    let r3 = Record::sign(&sk, b"n", 3, Some(b"three".to_vec()));
    assert!(matches!(
        d.put_record(r3, Some(1)).await,
        Err(DhtError::Refused(RemoteError::Conflict { .. }))
    ));
    assert_eq!(d.transport.record_puts.lock().unwrap().len(), 1);
}

/// A new record a put placed on the node after the owner (from a range
/// derived before the owner joined in front of it) is found there: every
/// set member answering "not held" is not "absent" while the nodes after
/// the set may hold it. Found in CI: a directory made just after a node
/// joined read as missing, and the file written into it failed with EIO.
#[tokio::test]
async fn a_record_placed_after_its_owner_is_found() {
    let d = dht(Fake::new(4), 1);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let rec = Record::sign(&sk, b"new dir", 1, Some(b"entries".to_vec()));
    let key = rec.key();
    let ids: Vec<Id> = (0..4).map(|i| d.transport.peer(i).id).collect();
    let owner = (0..4).find(|&i| ids[i] >= key).unwrap_or(0);
    let next = (owner + 1) % 4;
    d.transport.stores[next]
        .1
        .put_record(&rec, Some(0))
        .unwrap();
    assert_eq!(d.get_record(key).await.unwrap(), rec);
    // Held nowhere: absent, after the spares were asked too.
    let other = Record::sign(&sk, b"never stored", 1, None);
    assert_eq!(d.get_record(other.key()).await, Err(DhtError::NotFound));
}

/// Two writers' versions can reach a member after the owner in the other
/// order: the member already holds the later one and refuses the earlier
/// as stale. The owner accepted the earlier first, so the later one carries
/// it on: the copy counts, and the put succeeds (it used to fail at its
/// deadline, short of copies).
#[tokio::test]
async fn a_member_holding_a_later_version_counts_as_a_copy() {
    let d = dht(Fake::new(3), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let v1 = Record::sign(&sk, b"dir", 1, Some(b"one".to_vec()));
    d.put_record(v1.clone(), Some(0)).await.unwrap();
    let key = v1.key();
    // The owner is the first node at or after the key.
    let ids: Vec<Id> = (0..3).map(|i| d.transport.peer(i).id).collect();
    let owner = (0..3).find(|&i| ids[i] >= key).unwrap_or(0);
    // The next writer's version 3 reached the other members already.
    let v3 = Record::sign(&sk, b"dir", 3, Some(b"three".to_vec()));
    for (i, (_, store)) in d.transport.stores.iter().enumerate() {
        if i != owner {
            store.put_record(&v3, None).unwrap();
        }
    }
    let v2 = Record::sign(&sk, b"dir", 2, Some(b"two".to_vec()));
    d.put_record(v2, Some(1)).await.unwrap();
}

/// Two sides of a partition saved one record from the same version; the
/// replicas hold one side's version each. A read returns both (head
/// first), and a save above both replaces them on every replica.
#[tokio::test]
async fn concurrent_versions_are_read_together_until_a_merge_replaces_them() {
    use crate::clock::Clock;
    let d = dht(Fake::new(3), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let signed = |seq, c: &Clock, v: &[u8]| {
        Record::sign_clocked(&sk, b"dir", seq, c.clone(), Some(v.to_vec()))
    };
    let base = Clock::default().next(1);
    let v1 = signed(1, &base, b"base");
    d.put_record(v1.clone(), Some(0)).await.unwrap();
    let key = v1.key();
    let (a, b) = (base.next(1).next(1), base.next(2));
    let on_a = signed(3, &a, b"side a");
    let on_b = signed(2, &b, b"side b");
    d.transport.stores[0].1.put_record(&on_a, None).unwrap();
    for (_, store) in &d.transport.stores[1..] {
        store.put_record(&on_b, None).unwrap();
    }
    let got = d.get_record_versions(key).await.unwrap();
    assert_eq!(got, vec![on_a.clone(), on_b.clone()], "both, head first");
    assert_eq!(d.get_record_version(key).await.unwrap(), on_a);
    // A save that saw both replaces both, everywhere.
    let merged = signed(4, &a.join(&b).next(1), b"merged");
    d.put_record(merged.clone(), None).await.unwrap();
    assert_eq!(
        d.get_record_versions(key).await.unwrap(),
        vec![merged.clone()]
    );
    for (_, store) in &d.transport.stores {
        assert_eq!(store.get_versions(key).unwrap(), vec![merged.clone()]);
    }
}

/// Repair spreads concurrent versions: a replica holding both sides'
/// versions sends the one the others lack, and they keep it beside
/// their own.
#[tokio::test]
async fn repair_spreads_concurrent_versions_to_every_replica() {
    use crate::clock::Clock;
    let d = dht(Fake::new(3), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let signed =
        |seq, c: Clock, v: &[u8]| Record::sign_clocked(&sk, b"dir", seq, c, Some(v.to_vec()));
    let base = Clock::default().next(1);
    let on_a = signed(3, base.next(1).next(1), b"side a");
    let on_b = signed(2, base.next(2), b"side b");
    let key = on_a.key();
    for (_, store) in &d.transport.stores {
        store.put_record(&on_a, None).unwrap();
    }
    d.transport.stores[0].1.put_record(&on_b, None).unwrap();
    let mut both = vec![on_a.clone(), on_b.clone()];
    crate::store::order_versions(&mut both);
    assert_eq!(d.transport.stores[0].1.get_versions(key).unwrap(), both);
    let items = d.transport.stores[0].1.items();
    d.run(repair::RepairPass::new(items, [1; 32])).await;
    for (peer, store) in &d.transport.stores {
        assert_eq!(store.get_versions(key).unwrap(), both, "at {}", peer.addr);
    }
}

/// A repair pass whose node holds many blocks that its members lack
/// copies them all, with its workers together never holding more
/// copies in flight (block reads from its own store and stores to
/// members) than the pass's pool.
#[tokio::test]
async fn a_repair_pass_copies_at_most_its_pool_at_once() {
    let d = dht(Fake::new(5), 3);
    let blocks: Vec<Vec<u8>> = (0..64u32)
        .map(|i| format!("block {i}").into_bytes())
        .collect();
    for b in &blocks {
        d.transport.stores[0]
            .1
            .put_block(Id::hash(b), b, &[])
            .unwrap();
    }
    d.transport.slow_copies.store(true, SeqCst);
    let items = d.transport.stores[0].1.items();
    let stats = d.run(repair::RepairPass::new(items, [2; 32])).await;
    let peak = d.transport.copies_peak.load(SeqCst);
    assert!(
        peak <= repair::PUSHES_IN_FLIGHT,
        "{peak} copies in flight at once"
    );
    assert!(peak > 8, "more than one sync copied at once: {peak}");
    assert_eq!(d.transport.copies.load(SeqCst), 0);
    for b in &blocks {
        let key = Id::hash(b);
        let owners = d.transport.holders(key);
        assert!(
            owners.len() >= 3,
            "{} on {owners:?} ({stats:?})",
            key.short()
        );
    }
}

/// A first version stored at every member at once, where one member
/// already holds another writer's version: refused at once as a lost
/// compare-and-swap (the writer keeps its content as a conflict copy),
/// not retried until the deadline.
#[tokio::test]
async fn a_first_version_one_member_holds_another_of_is_refused() {
    let d = dht(Fake::new(3), 3);
    let sk = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let theirs = Record::sign(&sk, b"new", 2, Some(b"theirs".to_vec()));
    d.transport.stores[1]
        .1
        .put_record(&theirs, Some(0))
        .unwrap();
    let mine = Record::sign(&sk, b"new", 1, Some(b"mine".to_vec()));
    assert!(matches!(
        d.put_new_record(mine, false).await,
        Err(DhtError::Refused(RemoteError::Conflict { .. }))
    ));
}

#[tokio::test]
async fn sync_reaches_every_node_written_lazily() {
    let d = dht(Fake::new(4), 3);
    d.put_block_as(Id::hash(b"lazy"), b"lazy".to_vec(), Vec::new(), false)
        .await
        .unwrap();
    assert_eq!(d.unsynced.lock().unwrap().len(), 3, "every member noted");
    let holder = d.transport.peer(d.transport.holders(Id::hash(b"lazy"))[1]);
    d.transport.down.lock().unwrap().push(holder.id);
    d.sync()
        .await
        .expect("a node gone beside ones that synced is left to repair");
    assert!(d.unsynced.lock().unwrap().is_empty(), "and not asked again");
    // Every node that took a lazy write gone: the sync fails, and they
    // are kept for later.
    d.put_block_as(Id::hash(b"lazy2"), b"lazy2".to_vec(), Vec::new(), false)
        .await
        .unwrap();
    let all: Vec<_> = d.unsynced.lock().unwrap().keys().copied().collect();
    d.transport.down.lock().unwrap().extend(all.iter().copied());
    assert!(d.sync().await.is_err(), "no node synced");
    assert_eq!(d.unsynced.lock().unwrap().len(), all.len());
    d.transport.down.lock().unwrap().clear();
    d.sync().await.unwrap();
    assert!(d.unsynced.lock().unwrap().is_empty());
    // Durable puts need no sync.
    put_owned(&d, b"durable".to_vec()).await.unwrap();
    assert!(d.unsynced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_sync_started_while_another_runs_waits_for_its_nodes() {
    let d = dht(Fake::new(3), 3);
    d.put_block_as(Id::hash(b"lazy"), b"lazy".to_vec(), Vec::new(), false)
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *d.transport.hold_syncs.lock().unwrap() = Some(Arc::clone(&gate));
    // Its first step: the first sync takes the three nodes and asks them.
    let mut first = Box::pin(d.sync());
    assert!(futures::poll!(&mut first).is_pending());
    assert_eq!(
        d.transport.syncs.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert!(d.unsynced.lock().unwrap().is_empty());
    // A second sync (another file's fsync, whose lazy put went to the
    // same nodes) must not report them durable before they answered.
    let mut second = Box::pin(d.sync());
    assert!(
        futures::poll!(&mut second).is_pending(),
        "the second sync returned before the nodes the first took answered"
    );
    gate.add_permits(3);
    first.await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), second)
        .await
        .expect("the second sync ends after the first")
        .unwrap();
}

#[tokio::test]
async fn a_node_slow_to_sync_is_asked_again_a_few_times() {
    let d = dht(Fake::new(3), 3);
    let slow = d.transport.peer(1).id;
    d.put_block_as(Id::hash(b"lazy"), b"lazy".to_vec(), Vec::new(), false)
        .await
        .unwrap();
    let slow_for = |n: usize| d.transport.flaky.lock().unwrap().insert(slow, n as u32);
    slow_for(SYNC_TRIES - 1);
    d.sync().await.unwrap();
    assert!(d.unsynced.lock().unwrap().is_empty());
    // Slow every time: the sync fails, and the node is kept for later.
    d.put_block_as(Id::hash(b"lazy2"), b"lazy2".to_vec(), Vec::new(), false)
        .await
        .unwrap();
    slow_for(SYNC_TRIES);
    assert!(d.sync().await.is_err());
    assert!(d.unsynced.lock().unwrap().contains_key(&slow));
    assert_eq!(d.transport.flaky.lock().unwrap()[&slow], 0);
}

#[tokio::test]
async fn a_replica_that_fails_for_a_while_is_asked_again() {
    let d = dht(Fake::new(3), 3);
    let slow = d.transport.peer(1).id;
    d.transport.flaky.lock().unwrap().insert(slow, 3);
    let (_, copies) = put_owned(&d, b"retried".to_vec()).await.unwrap();
    assert_eq!(copies, 3);
    assert_eq!(d.transport.flaky.lock().unwrap()[&slow], 0);
}

#[tokio::test]
async fn a_local_replica_is_read_first() {
    let mut fake = Fake::new(5);
    fake.me = 2;
    let d = dht(fake, 3);
    // Find a block this node replicates.
    let data = (0u32..)
        .map(|i| i.to_be_bytes().to_vec())
        .find(|data| {
            let v = d.transport.view();
            let (owner, next) = v.local_answer(Id::hash(data)).unwrap();
            replica_set(&owner, &next, 3)
                .iter()
                .any(|p| p.id == v.me.id)
                && owner.id != v.me.id
        })
        .unwrap();
    let (key, _) = put_owned(&d, data.clone()).await.unwrap();
    d.transport.fetched_from.lock().unwrap().clear();
    assert_eq!(d.get_block(key).await.unwrap(), data);
    assert_eq!(
        d.transport.fetched_from.lock().unwrap()[0],
        d.transport.peer(2).id
    );
}

#[tokio::test]
async fn unreachable_data_reads_as_unavailable_not_absent() {
    let d = dht(Fake::new(3), 3);
    let (key, _) = put_owned(&d, b"behind a partition".to_vec()).await.unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    let rec = Record::sign(&sk, b"dir", 1, Some(b"entries".to_vec()));
    d.put_record(rec.clone(), Some(0)).await.unwrap();
    let others: Vec<Id> = (1..3).map(|i| d.transport.peer(i).id).collect();
    d.transport.down.lock().unwrap().extend(others.clone());
    // This node's own copy still answers.
    assert!(d.get_block(key).await.is_ok());
    d.transport.stores[0].1.remove(key).unwrap();
    d.transport.stores[0].1.remove(rec.key()).unwrap();
    for r in [
        d.get_block(key).await.map(|_| ()),
        d.get_record(rec.key()).await.map(|_| ()),
        d.get_block(Id::hash(b"never written")).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(DhtError::Unavailable(_))), "{r:?}");
    }
    d.transport.down.lock().unwrap().clear();
    assert!(d.get_block(key).await.is_ok());
}

#[tokio::test]
async fn a_full_ring_answers_no_space_at_once() {
    let d = dht(Fake::new(3), 3);
    let all: Vec<Id> = (0..3).map(|i| d.transport.peer(i).id).collect();
    d.transport.full.lock().unwrap().extend(all);
    let t = Instant::now();
    let r = put_owned(&d, b"too much".to_vec()).await;
    assert!(matches!(r, Err(DhtError::NoSpace(_))), "{r:?}");
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
    assert!(matches!(
        DhtError::NoSpace("x".into()).to_remote(),
        RemoteError::NoSpace(_)
    ));
    // One full member of three: the ring cannot keep three copies.
    d.transport.full.lock().unwrap().clear();
    let one = d.transport.peer(1).id;
    d.transport.full.lock().unwrap().insert(one);
    let r = put_owned(&d, b"still too much".to_vec()).await;
    assert!(matches!(r, Err(DhtError::NoSpace(_))), "{r:?}");
    // Space is back: it works without anything restarted.
    d.transport.full.lock().unwrap().clear();
    assert_eq!(put_owned(&d, b"fits".to_vec()).await.unwrap().1, 3);
}

// ---- locate over a scripted ring ---------------------------------------

/// A ring of nodes `ids` (sorted); node `liar`, if any, answers every
/// lookup step by naming `forged` as the owner.
struct Script {
    ids: Vec<u8>,
    liar: Option<u8>,
    forged: u8,
}

impl Script {
    fn peer(b: u8) -> Peer {
        crate::wire::test_peer(b)
    }

    fn pos(&self, b: u8) -> usize {
        self.ids.iter().position(|&x| x == b).unwrap()
    }

    fn succs(&self, b: u8) -> Vec<Peer> {
        let i = self.pos(b);
        let n = self.ids.len();
        (1..n.min(5))
            .map(|d| Script::peer(self.ids[(i + d) % n]))
            .collect()
    }

    fn answer(&self, io: &Io) -> Reply {
        let Io::Call { to, req, .. } = io else {
            panic!("no removals here")
        };
        let me = to.id.0[31];
        let n = self.ids.len();
        let i = self.pos(me);
        let succ = self.ids[(i + 1) % n];
        let pred = self.ids[(i + n - 1) % n];
        let resp = match req {
            Request::Chord(ChordRequest::FindSuccessor(key)) => {
                if self.liar == Some(me) {
                    ChordResponse::Found {
                        owner: Script::peer(self.forged),
                        next: vec![],
                    }
                } else if key.in_half_open(to.id, Script::peer(succ).id) {
                    ChordResponse::Found {
                        owner: Script::peer(succ),
                        next: self.succs(succ),
                    }
                } else {
                    // Honest but slow routing: successors before the key.
                    ChordResponse::Next(
                        self.succs(me)
                            .into_iter()
                            .filter(|p| p.id.in_open(to.id, *key))
                            .collect(),
                    )
                }
            }
            Request::Chord(ChordRequest::GetState) => ChordResponse::State {
                pred: Some(Script::peer(pred)),
                succs: self.succs(me),
                whole: false,
            },
            other => panic!("unexpected call {other:?}"),
        };
        Ok(Response::Chord(resp))
    }
}

/// A key just after node `b` (nodes are 10 apart).
fn small_key(b: u8) -> Id {
    crate::id::small(b + 5)
}

fn scripted_view(me: u8, s: &Script) -> RingView {
    let i = s.pos(me);
    let n = s.ids.len();
    RingView {
        me: Script::peer(me),
        member: true,
        pred: Some(Script::peer(s.ids[(i + n - 1) % n])),
        succs: s.succs(me),
        whole: false,
        fingers: vec![Script::peer(s.ids[(i + n / 2) % n])],
    }
}

#[test]
fn locate_confirms_with_the_owner_and_learns_the_range() {
    let s = Script {
        ids: (1..=16).map(|i| i * 10).collect(),
        liar: None,
        forged: 0,
    };
    let view = scripted_view(10, &s);
    let routes = RouteCache::default();
    let policy = Policy::default();
    // The key lies just after node 120: owner 130.
    let key = small_key(120);
    let mut l = super::LocateOnce(Locate::new(key, CacheUse::Fresh));
    let (p, _) = run_sync(&mut l, &view, &routes, 3, &policy, |io, _| s.answer(io));
    let p = p.unwrap();
    assert_eq!(p.owner, Script::peer(130));
    assert_eq!(p.from, Some(Script::peer(120).id));
    assert_eq!(p.next, s.succs(130), "replicas from the owner's own list");
    assert!(p.hops > 0);
    // The confirmed range is cached now.
    let cached = routes.get(key, 1, false).unwrap();
    assert_eq!(cached.owner, Script::peer(130));
}

#[test]
fn a_lying_hop_cannot_name_the_owner() {
    // Node 80 answers every step by naming 50 (a real node, but not the
    // owner); 50 does not confirm, 80 becomes a suspect, and the lookup
    // routes around it.
    let s = Script {
        ids: (1..=16).map(|i| i * 10).collect(),
        liar: Some(80),
        forged: 50,
    };
    let mut view = scripted_view(10, &s);
    view.fingers = vec![Script::peer(80)];
    let routes = RouteCache::default();
    let policy = Policy::default();
    let key = small_key(120);
    let mut l = super::LocateOnce(Locate::new(key, CacheUse::Fresh));
    let (p, _) = run_sync(&mut l, &view, &routes, 3, &policy, |io, _| s.answer(io));
    assert_eq!(p.unwrap().owner, Script::peer(130));
    // A liar that names itself fails the check with its predecessor.
    let s = Script {
        ids: (1..=16).map(|i| i * 10).collect(),
        liar: Some(80),
        forged: 80,
    };
    let mut l = super::LocateOnce(Locate::new(key, CacheUse::Fresh));
    let (p, _) = run_sync(&mut l, &view, &routes, 3, &policy, |io, _| s.answer(io));
    assert_eq!(p.unwrap().owner, Script::peer(130));
}

#[test]
fn typed_replies_of_the_wrong_kind_are_unexpected() {
    let r = crate::rpc::FetchBlock::parse(Ok(Response::Replica(ReplicaResponse::Stored)));
    assert_eq!(r, Err(CallError::Unexpected));
}

/// An ordered put returns at the owner's verdict: one compare-and-swap
/// call, lazily. The other members take the version in the background,
/// without one, and a sync after that covers all three.
#[tokio::test]
async fn an_ordered_put_returns_at_the_owners_verdict_and_the_rest_follow() {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
    let (d, v1) = shared_with_a_record(4, &sk).await;
    let key = v1.key();
    d.transport.record_puts.lock().unwrap().clear();
    let v2 = Record::sign(&sk, b"f", 2, Some(b"two".to_vec()));
    let rest = d.put_record_ordered(v2.clone(), Some(1)).await.unwrap();
    let at_verdict = d.transport.record_puts.lock().unwrap().clone();
    assert_eq!(at_verdict.len(), 1, "the owner alone: {at_verdict:?}");
    let owner = at_verdict[0].0;
    assert_eq!(at_verdict[0], (owner, false, Some(1)));
    let stored = rest.wait().await.unwrap();
    assert_eq!(stored.copies, 3);
    let puts = d.transport.record_puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 3);
    for (to, durable, expected) in &puts[1..] {
        assert_ne!(*to, owner);
        assert_eq!((*durable, *expected), (false, None));
    }
    for i in d.transport.holders(key) {
        assert_eq!(
            d.transport.stores[i].1.get_record(key).unwrap(),
            Some(v2.clone())
        );
    }
    assert_eq!(d.transport.holders(key).len(), 3);
    assert_eq!(d.unsynced.lock().unwrap().len(), 3);
    d.sync().await.unwrap();
    assert_eq!(
        d.transport.syncs.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

/// An ordered put the owner refuses (another writer's version came first)
/// fails at once and sends nothing to the other members; one whose other
/// members cannot be reached returns at the verdict and its rest fails.
#[tokio::test]
async fn an_ordered_put_refused_sends_nothing_on_and_an_unreachable_rest_fails() {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    let (d, _) = shared_with_a_record(3, &sk).await;
    let theirs = Record::sign(&sk, b"f", 2, Some(b"theirs".to_vec()));
    d.put_record(theirs.clone(), Some(1)).await.unwrap();
    d.transport.record_puts.lock().unwrap().clear();
    let mine = Record::sign(&sk, b"f", 2, Some(b"mine".to_vec()));
    assert!(matches!(
        d.put_record_ordered(mine, Some(1)).await,
        Err(DhtError::Refused(_))
    ));
    assert_eq!(d.transport.record_puts.lock().unwrap().len(), 1);
    // The other two members down: the owner takes v3, the rest fails.
    let owner = d.transport.record_puts.lock().unwrap()[0].0;
    let others: Vec<Id> = d
        .transport
        .stores
        .iter()
        .map(|s| s.0.id)
        .filter(|id| *id != owner)
        .collect();
    d.transport.down.lock().unwrap().extend(others);
    let v3 = Record::sign(&sk, b"f", 3, Some(b"three".to_vec()));
    let rest = d.put_record_ordered(v3, Some(2)).await.unwrap();
    assert!(matches!(
        rest.wait().await,
        Err(DhtError::TooFewReplicas { stored: 1, .. })
    ));
}

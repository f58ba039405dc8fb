//! Write-behind of directory changes ([`super::pending`]): what is visible
//! before an update is stored, who waits for it, and how failures and
//! concurrent writers are handled.

use super::gated::{Gate, GatedStore};
use super::mem_store::MemStore;
use super::object::{Attrs, Kind};
use super::*;
use std::sync::Arc;
use std::time::Duration;

const SECRET: [u8; 32] = [9; 32];

/// A vault over a gated view of `mem`, with its root's record gated.
fn gated_vault(mem: &Arc<MemStore>, gate: Gate) -> Arc<Vault<GatedStore>> {
    let v = Vault::new(
        Arc::new(GatedStore::new(Arc::clone(mem))),
        Identity::from_secret(SECRET),
    );
    let key = v.identity().record_key(&v.root().name);
    v.store.gate(key, gate);
    v
}

/// Names in the root as stored now (read by a fresh vault).
async fn stored_names(mem: &Arc<MemStore>) -> Vec<Vec<u8>> {
    let v = Vault::new(Arc::clone(mem), Identity::from_secret(SECRET));
    let root = v.load(&v.root()).await.unwrap();
    root.obj.entries().unwrap().keys().cloned().collect()
}

fn attrs() -> Attrs {
    Attrs::new(0o644, 0, 0)
}

/// Lets spawned tasks run for a while.
async fn settle_time() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn pending_entry_is_visible_here_at_once_and_fsync_waits_for_it() {
    let mem = Arc::new(MemStore::default());
    let v = gated_vault(&mem, Gate::Hold);
    let root = v.root();
    let (link, state, ticket) = v.create_pending(&root, b"a", attrs()).await.unwrap();
    // Visible through this vault before anything is stored...
    let view = v.load(&root).await.unwrap();
    assert_eq!(view.obj.entry(b"a").unwrap(), link);
    assert_eq!(v.recent_dir(&root).unwrap().obj.entry(b"a").unwrap(), link);
    assert_eq!(
        v.create_pending(&root, b"a", attrs()).await.unwrap_err(),
        FsError::Exists,
        "the view refuses a taken name"
    );
    // ...but not stored.
    settle_time().await;
    assert!(stored_names(&mem).await.is_empty());
    assert!(!ticket.is_done());
    assert!(v.has_pending_dirs());
    // A close (a flush that is not durable) stores the content and
    // returns without waiting for the entry; the file stays dirty.
    let mut f = OpenFile::from_state(link.clone(), state);
    f.set_linking(ticket.clone());
    f.write(&v, 0, b"hello").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), f.flush(&v, Durability::Later))
        .await
        .expect("close does not wait for the entry")
        .unwrap();
    assert!(f.is_dirty(), "the entry is still to be stored");
    // fsync does not return while the entry is not stored.
    let v2 = Arc::clone(&v);
    let syncing = tokio::spawn(async move {
        let r = f.flush(&v2, Durability::Now).await;
        (f, r)
    });
    settle_time().await;
    assert!(
        !syncing.is_finished(),
        "fsync waits for the directory entry"
    );
    v.store.set(Gate::Open);
    let (f, r) = tokio::time::timeout(Duration::from_secs(5), syncing)
        .await
        .unwrap()
        .unwrap();
    r.unwrap();
    assert!(!f.is_dirty());
    assert!(ticket.is_done());
    assert_eq!(stored_names(&mem).await, vec![b"a".to_vec()]);
    // Another vault of the same identity reads the content.
    let other = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let (l, st) = other.resolve("/a").await.unwrap();
    let mut g = OpenFile::from_state(l, st);
    assert_eq!(g.read(&other, 0, 100).await.unwrap(), b"hello");
    settle_time().await;
    assert!(
        !v.has_pending_dirs(),
        "an idle directory's state is dropped"
    );
}

/// New files' entries are held for the next ones: a copy that creates
/// files one after another stores its directory once per batch, and each
/// entry is stored within `CREATE_DELAY` without anyone waiting for it.
#[tokio::test(start_paused = true)]
async fn new_entries_are_held_for_the_next_and_stored_within_the_delay() {
    let mem = Arc::new(MemStore::default());
    let v = gated_vault(&mem, Gate::Open);
    let root = v.root();
    let before = v.store.puts();
    let mut tickets = Vec::new();
    for i in 0..10u8 {
        let name = format!("f{i}");
        let (link, state, t) = v
            .create_pending(&root, name.as_bytes(), attrs())
            .await
            .unwrap();
        let mut f = OpenFile::from_state(link, state);
        f.set_linking(t.clone());
        f.write(&v, 0, b"x").await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        tickets.push(t);
        tokio::time::sleep(pending::CREATE_DELAY / 20).await;
    }
    assert!(!tickets[0].is_done(), "held");
    assert!(stored_names(&mem).await.is_empty());
    tokio::time::sleep(pending::CREATE_DELAY).await;
    for t in &tickets {
        t.wait().await.unwrap();
    }
    assert_eq!(stored_names(&mem).await.len(), 10);
    assert_eq!(
        v.store.puts() - before,
        1,
        "ten new entries, one directory update"
    );
}

#[tokio::test]
async fn a_failed_background_update_fails_the_fsync_and_the_settle() {
    let mem = Arc::new(MemStore::default());
    let v = gated_vault(&mem, Gate::Fail);
    let root = v.root();
    let (link, state, ticket) = v.create_pending(&root, b"lost", attrs()).await.unwrap();
    let mut f = OpenFile::from_state(link, state);
    f.set_linking(ticket.clone());
    f.write(&v, 0, b"data").await.unwrap();
    let err = f.flush(&v, Durability::Now).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // Reported again by a later flush, durable or not, and the view no
    // longer shows it.
    assert_eq!(
        f.flush(&v, Durability::Later).await.unwrap_err().errno(),
        libc::EIO
    );
    assert!(v.load(&root).await.unwrap().obj.entry(b"lost").is_err());
    assert!(stored_names(&mem).await.is_empty());
    // fsyncdir and unmount report a failed change too, pending then...
    v.store.set(Gate::Hold);
    let (_, _, t2) = v.create_pending(&root, b"second", attrs()).await.unwrap();
    v.store.set(Gate::Fail);
    assert!(v.settle_all().await.is_err());
    assert!(t2.is_done());
    // ...or noted as failed after its close had returned.
    v.note_failed_behind(FsError::Unavailable("test".into()));
    assert!(v.settle_all().await.is_err());
    assert!(v.settle_all().await.is_ok(), "reported once");
}

#[tokio::test]
async fn a_concurrent_writers_entry_is_kept() {
    let mem = Arc::new(MemStore::default());
    let v1 = gated_vault(&mem, Gate::Hold);
    let root = v1.root();
    let (_, _, t1) = v1.create_pending(&root, b"mine", attrs()).await.unwrap();
    settle_time().await;
    // Another machine links its file while ours is held back.
    let v2 = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    v2.create(&root, b"theirs", Kind::File, attrs(), None)
        .await
        .unwrap();
    v1.store.set(Gate::Open);
    t1.wait().await.unwrap();
    assert_eq!(
        stored_names(&mem).await,
        vec![b"mine".to_vec(), b"theirs".to_vec()],
        "the conflict was retried on the new version"
    );
    assert!(v1.store.puts() >= 2, "one attempt lost the race");
}

/// A new file whose name another machine's new file took meanwhile is
/// linked under a conflict name, not dropped: both files stay, and the
/// open file learns its name at its flush.
#[tokio::test]
async fn a_new_files_name_taken_meanwhile_elsewhere_becomes_a_conflict_name() {
    let mem = Arc::new(MemStore::default());
    let v1 = gated_vault(&mem, Gate::Hold);
    v1.conflicts.set_machine("one");
    let root = v1.root();
    let (_, _, first) = v1.create_pending(&root, b"first", attrs()).await.unwrap();
    settle_time().await;
    // Queued behind the held update: one taken elsewhere, one free.
    let (link, state, taken) = v1.create_pending(&root, b"x", attrs()).await.unwrap();
    let mut file = OpenFile::from_state(link.clone(), state);
    file.set_linking(taken.clone());
    file.set_place(root.clone(), b"x".to_vec());
    let (_, _, free) = v1.create_pending(&root, b"y", attrs()).await.unwrap();
    let v2 = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let (theirs, _) = v2
        .create(&root, b"x", Kind::File, attrs(), None)
        .await
        .unwrap();
    // Here the name is still this vault's file.
    assert!(matches!(
        v1.create_pending(&root, b"x", attrs()).await,
        Err(FsError::Exists)
    ));
    v1.store.set(Gate::Open);
    first.wait().await.unwrap();
    file.write(&v1, 0, b"mine").await.unwrap();
    file.flush(&v1, Durability::Later).await.unwrap();
    free.wait().await.unwrap();
    let Some(Conflicted::Renamed(name)) = file.take_conflict() else {
        panic!("the file kept a name another file has");
    };
    assert!(name.starts_with(b"x.conflict-one-"), "{name:?}");
    assert_eq!(
        stored_names(&mem).await,
        vec![
            b"first".to_vec(),
            b"x".to_vec(),
            name.clone(),
            b"y".to_vec()
        ]
    );
    let stored = v1.load(&root).await.unwrap();
    assert_eq!(
        stored.obj.entry(b"x").unwrap(),
        theirs,
        "the first stored keeps the name"
    );
    assert_eq!(stored.obj.entry(&name).unwrap(), link);
}

#[tokio::test]
async fn changes_queued_behind_an_update_are_stored_together() {
    let mem = Arc::new(MemStore::default());
    let v = gated_vault(&mem, Gate::Hold);
    let root = v.root();
    let mut tickets = Vec::new();
    for name in [&b"a"[..], b"b", b"c", b"d"] {
        tickets.push(v.create_pending(&root, name, attrs()).await.unwrap().2);
        settle_time().await;
    }
    assert_eq!(v.store.puts(), 1, "only the first update is in flight");
    // A synchronous change (mkdir) queues behind them and waits.
    let v2 = Arc::clone(&v);
    let root2 = root.clone();
    let mkdir = tokio::spawn(async move {
        v2.create(&root2, b"sub", Kind::Dir, Attrs::new(0o755, 0, 0), None)
            .await
    });
    settle_time().await;
    assert!(!mkdir.is_finished());
    v.store.set(Gate::Open);
    mkdir.await.unwrap().unwrap();
    for t in &tickets {
        t.wait().await.unwrap();
    }
    assert_eq!(v.store.puts(), 2, "the queued changes went in one update");
    assert_eq!(stored_names(&mem).await.len(), 5);
    // Removing waits for pending changes, then sees them.
    v.store.set(Gate::Hold);
    let (_, _, t) = v.create_pending(&root, b"e", attrs()).await.unwrap();
    let v3 = Arc::clone(&v);
    let root3 = root.clone();
    let rm = tokio::spawn(async move { v3.remove(&root3, b"e", false, None).await });
    settle_time().await;
    v.store.set(Gate::Open);
    rm.await.unwrap().unwrap();
    t.wait().await.unwrap();
    assert!(!stored_names(&mem).await.contains(&b"e".to_vec()));
}

#[test]
fn a_cancelled_store_task_fails_its_waiters_instead_of_hanging() {
    let mem = Arc::new(MemStore::default());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let rt = runtime();
    let (v, ticket) = rt.block_on(async {
        let v = gated_vault(&mem, Gate::Hold);
        let (_, _, t) = v.create_pending(&v.root(), b"a", attrs()).await.unwrap();
        settle_time().await; // the storing task is held in its put
        (v, t)
    });
    drop(rt); // cancels the storing task
    runtime().block_on(async {
        let r = tokio::time::timeout(Duration::from_secs(5), ticket.wait()).await;
        assert!(matches!(r, Ok(Err(FsError::Unavailable(_)))), "{r:?}");
        assert!(!v.has_pending_dirs());
        // The directory works again.
        v.store.set(Gate::Open);
        let (_, _, t) = v.create_pending(&v.root(), b"b", attrs()).await.unwrap();
        t.wait().await.unwrap();
    });
}

#[tokio::test]
async fn a_removed_directory_is_deleted_only_after_its_own_removals_are_stored() {
    let mem = Arc::new(MemStore::default());
    let v = Vault::new(
        Arc::new(GatedStore::new(Arc::clone(&mem))),
        Identity::from_secret(SECRET),
    );
    let root = v.root();
    let (dir, _) = v
        .create(&root, b"d", Kind::Dir, Attrs::new(0o755, 0, 0), None)
        .await
        .unwrap();
    let (link, state) = v
        .create(&dir, b"f", Kind::File, attrs(), None)
        .await
        .unwrap();
    let mut f = OpenFile::from_state(link, state);
    f.write(&v, 0, &vec![1u8; 2 << 20]).await.unwrap();
    f.flush(&v, Durability::Later).await.unwrap();
    v.settle_all().await.unwrap();
    assert!(!mem.blocks.lock().unwrap().is_empty());
    // The directory's record is held while `rm -rf d` runs.
    v.store.gate(v.identity().record_key(&dir.name), Gate::Hold);
    v.remove_behind(&dir, b"f", false, None).await.unwrap();
    v.remove_behind(&root, b"d", true, None).await.unwrap();
    v.settle_dir(&root).await;
    // The directory's delete waits for its removal of `f`: only that one
    // put of its record was tried.
    for _ in 0..20 {
        settle_time().await;
        assert_eq!(v.store.puts(), 1, "the delete did not wait");
    }
    v.store.set(Gate::Open);
    v.settle_all().await.unwrap();
    assert!(
        mem.blocks.lock().unwrap().is_empty(),
        "f lost its last name and its blocks"
    );
    assert!(stored_names(&mem).await.is_empty());
}

/// A lazy change (an entry's attribute copy after a close) is not stored
/// on its own at once: it waits for the directory's next change that is
/// not lazy and goes in the same update, or is stored after the delay, or
/// at once when someone waits for it (`settle_all`).
#[tokio::test]
async fn lazy_changes_ride_along_with_the_next_update() {
    let mem = Arc::new(MemStore::default());
    let v = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let root = v.root();
    let root_key = v.identity().record_key(&root.name);
    let (a, _, t) = v.create_pending(&root, b"a", attrs()).await.unwrap();
    t.wait().await.unwrap();
    let root_puts = |mem: &MemStore| {
        mem.take_durabilities()
            .iter()
            .filter(|(k, _)| *k == root_key)
            .count()
    };
    mem.take_durabilities();
    let mut big = attrs();
    big.size = 4096;
    let lazy = v
        .queue_entry_attrs(&root, b"a", &a, big.clone(), Durability::Later)
        .await
        .unwrap()
        .expect("a change to queue");
    settle_time().await;
    assert!(!lazy.is_done(), "stored on its own at once");
    assert_eq!(root_puts(&mem), 0);
    // The next create takes it along: one update of the root for both.
    let (_, _, t) = v.create_pending(&root, b"b", attrs()).await.unwrap();
    t.wait().await.unwrap();
    assert!(lazy.is_done());
    assert_eq!(root_puts(&mem), 1, "one update for the create and the copy");
    let stored = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let e = stored.load(&root).await.unwrap();
    let copy = e
        .obj
        .entries()
        .unwrap()
        .get(b"a".as_slice())
        .unwrap()
        .attrs
        .clone();
    assert_eq!(copy.map(|c| c.size), Some(4096));
    // Alone, it is stored after the delay...
    big.size = 1;
    let lazy = v
        .queue_entry_attrs(&root, b"a", &a, big.clone(), Durability::Later)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(pending::LAZY_DELAY * 4, lazy.wait())
        .await
        .expect("a lazy change alone is stored after the delay")
        .unwrap();
    // ...or at once when waited for.
    big.size = 2;
    let lazy = v
        .queue_entry_attrs(&root, b"a", &a, big, Durability::Later)
        .await
        .unwrap()
        .unwrap();
    let t0 = std::time::Instant::now();
    v.settle_all().await.unwrap();
    assert!(lazy.is_done());
    assert!(
        t0.elapsed() < pending::LAZY_DELAY,
        "settle_all waited the delay out"
    );
}

#[tokio::test]
async fn changes_queued_at_once_share_one_fetch_of_their_directory() {
    let mem = Arc::new(MemStore::default());
    // A directory another vault stored: this one has no state or
    // remembered version of it, so its first change fetches it.
    let other = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let (dir, _) = other
        .create(
            &other.root(),
            b"d",
            Kind::Dir,
            Attrs::new(0o755, 0, 0),
            None,
        )
        .await
        .unwrap();
    let (file, _) = other
        .create(&other.root(), b"f", Kind::File, attrs(), None)
        .await
        .unwrap();
    let v = Vault::new(
        Arc::new(GatedStore::new(Arc::clone(&mem))),
        Identity::from_secret(SECRET),
    );
    v.store.gate(v.identity().record_key(&dir.name), Gate::Open);
    // Queued together, as the trash entries of an `rm -rf` are.
    let queued = futures::future::join_all((0..32u32).map(|i| {
        let entry = object::Entry {
            link: file.clone(),
            attrs: None,
        };
        let add: pending::DirChange = Box::new(move |d| {
            let entries = d.entries_mut().ok_or(FsError::NotDir)?;
            entries.insert(format!("n{i}").into_bytes(), entry.clone());
            Ok(())
        });
        v.queue_dir_change_held(&dir, add, Duration::from_millis(20))
    }))
    .await;
    for t in queued {
        t.unwrap().wait().await.unwrap();
    }
    assert_eq!(
        v.store.reads(),
        1,
        "one fetch of the directory for all the changes queued meanwhile"
    );
    let stored = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let d = stored.load(&dir).await.unwrap();
    assert_eq!(
        d.obj.entries().map(|e| e.len()),
        Some(32),
        "every change stored"
    );
}

/// A removal written behind holds one of the [`REMOVALS_BEHIND`] permits
/// from its `unlink` until its object is unlinked, so an `rm -rf` cannot
/// run ahead of the ring without bound.
#[tokio::test]
async fn a_removal_behind_holds_a_permit_until_its_object_is_unlinked() {
    let mem = Arc::new(MemStore::default());
    let v = gated_vault(&mem, Gate::Open);
    let root = v.root();
    for name in [b"a".as_slice(), b"b"] {
        v.create(&root, name, Kind::File, attrs(), None)
            .await
            .unwrap();
    }
    v.settle_all().await.unwrap();
    assert_eq!(v.removals_behind(), 0);
    v.store.set(Gate::Hold);
    v.remove_behind(&root, b"a", false, None).await.unwrap();
    v.remove_behind(&root, b"b", false, None).await.unwrap();
    settle_time().await;
    assert_eq!(v.removals_behind(), 2, "held while the change waits");
    v.store.set(Gate::Open);
    v.settle_all().await.unwrap();
    assert_eq!(v.removals_behind(), 0, "given back once unlinked");
    assert!(stored_names(&mem).await.is_empty());
}

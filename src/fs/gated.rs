//! A test backend over a shared [`MemStore`] whose record puts to one key
//! can be held back or failed on demand, to test what callers see while a
//! write is in flight or after it failed.

use super::mem_store::MemStore;
use super::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What happens to a put of the gated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Goes through.
    Open,
    /// Waits until the gate is set to something else.
    Hold,
    /// Fails with `Unavailable`.
    Fail,
}

/// A [`MemStore`] (shared with other vaults) with a gate on one record key.
pub struct GatedStore {
    /// Where everything is kept.
    pub inner: Arc<MemStore>,
    /// The gated record key.
    key: Mutex<Option<Id>>,
    /// The gate's state.
    gate: watch::Sender<Gate>,
    /// Puts of the gated key so far (each attempt counts).
    pub puts: AtomicUsize,
    /// Reads of the gated key so far.
    reads: AtomicUsize,
}

impl GatedStore {
    /// A store over `inner`, gating nothing yet.
    pub fn new(inner: Arc<MemStore>) -> GatedStore {
        GatedStore {
            inner,
            key: Mutex::new(None),
            gate: watch::channel(Gate::Open).0,
            puts: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        }
    }

    /// Gates record `key` with `gate`.
    pub fn gate(&self, key: Id, gate: Gate) {
        *self.key.lock().unwrap() = Some(key);
        self.set(gate);
    }

    /// Sets the gate.
    pub fn set(&self, gate: Gate) {
        self.gate.send_replace(gate);
    }

    /// Puts of the gated key so far.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// Reads of the gated key so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl BlockStore for GatedStore {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> Result<Id, FsError> {
        self.inner.put_block(key, data, claim, durability).await
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        self.inner.release(rel).await
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        self.inner.space(owner).await
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        self.inner.get_block(key).await
    }

    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        if *self.key.lock().unwrap() == Some(rec.key()) {
            self.puts.fetch_add(1, Ordering::SeqCst);
            let mut rx = self.gate.subscribe();
            let gate = *rx.wait_for(|g| *g != Gate::Hold).await.unwrap();
            if gate == Gate::Fail {
                return Err(FsError::Unavailable("gated".into()));
            }
        }
        self.inner.put_record(rec, expected_seq, durability).await
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        if *self.key.lock().unwrap() == Some(key) {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // A read takes a while, as a round trip to the ring does: other
            // tasks run meanwhile.
            tokio::task::yield_now().await;
        }
        self.inner.get_versions(key).await
    }

    async fn writer(&self) -> Result<u64, FsError> {
        self.inner.writer().await
    }

    async fn sync(&self) -> Result<(), FsError> {
        self.inner.sync().await
    }
}

//! Checking the disk in the background.
//!
//! A block is hashed when it is stored, and every reader checks what it
//! gets against the key, so a storage node serves blocks without hashing
//! them again ([`Store::serve_block`]). What the disk may have damaged
//! since is found here instead: [`Store::scrub`] re-hashes the blocks in
//! key order, a bounded number of bytes per call, and deletes a bad copy
//! (the node then fetches a good one from a replica). The node calls it
//! in a loop, so every block is checked about once per store size ÷ rate.

use super::block_file::{self, BlockFile};
use super::{Kind, Store, StoreError, lock};
use crate::id::Id;

/// Blocks listed from the index per step.
const BATCH: usize = 256;

/// What one scrub step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// The key to go on after (the last one checked); `None` once the
    /// last block was checked.
    pub next: Option<Id>,
    /// Blocks checked.
    pub checked: usize,
    /// Bad copies found and deleted.
    pub corrupt: Vec<Id>,
}

impl Store {
    /// Reads block `key` and its claims to send to a reader, without
    /// hashing the data (the reader checks it against the key; the scrub
    /// checks the disk). A read that races an overwrite of the file may
    /// get mixed bytes: the reader's check turns that into a try at the
    /// next replica.
    pub fn serve_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        if lock(&self.index).block(key).is_none() {
            return Ok(None);
        }
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.read_item(Kind::Block, key)? {
            Some(bytes) => Ok(Some(block_file::split(bytes))),
            // Removed meanwhile: the locked read sorts it out.
            None => {
                let _stripe = lock(self.block_lock(key));
                self.read_block_file(key)
            }
        }
    }

    /// Re-hashes blocks in key order after `after` until about `budget`
    /// bytes were read (at least one block); a bad copy is deleted and
    /// listed.
    pub fn scrub(&self, after: Option<Id>, budget: u64) -> Result<Scrubbed, StoreError> {
        let listed = lock(&self.index).blocks_after(after, BATCH);
        let mut done = Scrubbed::default();
        let mut read = 0u64;
        for (i, (key, len)) in listed.iter().enumerate() {
            if i > 0 && read >= budget {
                done.next = Some(listed[i - 1].0);
                return Ok(done);
            }
            // The common case, unlocked; a bad read is looked at again
            // under the block's lock (a put may have been rewriting it).
            let good = match self.read_item(Kind::Block, *key) {
                Ok(Some(b)) => block_file::decode(b, *key).is_some(),
                _ => false,
            };
            if !good {
                let _stripe = lock(self.block_lock(*key));
                match self.read_block_file(*key) {
                    Ok(_) => {}
                    Err(StoreError::Corrupt(k)) => done.corrupt.push(k),
                    Err(e) => return Err(e),
                }
            }
            done.checked += 1;
            read += len;
        }
        // Stopped by the batch, not the budget: go on after its last key.
        done.next = (listed.len() == BATCH).then(|| listed[BATCH - 1].0);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_block_is_served_as_is_and_found_by_the_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blocks: Vec<(Id, Vec<u8>)> = (0..5u32)
            .map(|i| {
                let d = vec![i as u8; 1000 + i as usize];
                (Id::hash(&d), d)
            })
            .collect();
        for (k, d) in &blocks {
            store.put_block(*k, d, &[]).unwrap();
        }
        let (bad, good) = (blocks[2].0, blocks[3].0);
        store.packs.damage(Kind::Block, bad);
        // Served without a hash: the reader's check catches it.
        let served = store.serve_block(bad).unwrap().unwrap();
        assert_ne!(Id::hash(&served.data), bad);
        assert_eq!(store.serve_block(good).unwrap().unwrap().data, blocks[3].1);
        // One block per step (budget 1 byte): five steps, then the end.
        let mut after = None;
        let mut found = Vec::new();
        for step in 0..5 {
            let s = store.scrub(after, 1).unwrap();
            assert_eq!(s.checked, 1);
            found.extend(s.corrupt);
            after = s.next;
            assert_eq!(after.is_none(), step == 4, "step {step}");
        }
        assert_eq!(found, vec![bad]);
        assert!(!store.packs.holds(Kind::Block, bad));
        assert_eq!(store.serve_block(bad).unwrap(), None);
        // A whole pass in one step finds nothing more.
        let s = store.scrub(None, u64::MAX).unwrap();
        assert_eq!((s.checked, s.next, s.corrupt.len()), (4, None, 0));
    }
}

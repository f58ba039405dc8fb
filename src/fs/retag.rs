//! Tagging a folder's records with a scope, so writers the owner grants
//! that scope may change them ([`crate::grant`]): every record of the
//! subtree (each object's own record and its directory shard records) is
//! stored again as its next version, the same value, signed by the owner
//! with the scope. New objects made in the folder afterwards inherit it
//! (`Vault::inherit_scope`).

use super::vault::Vault;
use super::{BlockStore, Durability, FsError, Kind, Link};
use crate::grant::Scope;
use std::sync::Arc;

impl<S: BlockStore> Vault<S> {
    /// Tags every record under directory `top` (itself included) with
    /// `scope`; returns how many records were stored again. A record with
    /// concurrent versions waiting for a merge stops it (`Conflict`):
    /// reading the folder merges them, then it can be run again.
    pub async fn retag(self: &Arc<Self>, top: &Link, scope: Scope) -> Result<usize, FsError> {
        let mut stack = vec![top.clone()];
        let mut stored = 0;
        while let Some(link) = stack.pop() {
            let v = self.load(&link).await?;
            let mut names = vec![link.name.clone()];
            names.extend(
                v.layout
                    .nodes
                    .values()
                    .filter(|n| n.seq > 0 && n.name != link.name)
                    .map(|n| n.name.clone()),
            );
            for name in names {
                stored += usize::from(self.retag_record(&name, scope).await?);
            }
            for e in v.obj.entries().into_iter().flat_map(|e| e.values()) {
                match e.link.kind {
                    Kind::Dir => stack.push(e.link.clone()),
                    _ => stored += usize::from(self.retag_record(&e.link.name, scope).await?),
                }
            }
        }
        Ok(stored)
    }

    /// Tags record `name` with `scope`: whether a version was stored. A
    /// record not stored yet (a file created, never saved) is tagged at
    /// its first save.
    async fn retag_record(&self, name: &[u8], scope: Scope) -> Result<bool, FsError> {
        let key = self.identity().record_key(name);
        self.clocks.set_scope(key, Some(scope));
        for attempt in 0..super::vault::CAS_ATTEMPTS {
            let versions = self.read_versions(key).await?;
            let Some(head) = versions.first() else {
                return Ok(false);
            };
            if versions.len() > 1 {
                return Err(FsError::Conflict(Some(head.seq)));
            }
            if head.scope() == Some(scope) {
                return Ok(false);
            }
            self.clocks.set_scope(key, Some(scope));
            let rec = self
                .sign_next(
                    name,
                    head.seq + 1,
                    head.value.as_deref().map(<[u8]>::to_vec),
                )
                .await?;
            match self
                .store
                .put_record(rec, Some(head.seq), Durability::Later)
                .await
            {
                Ok(()) => return Ok(true),
                Err(FsError::Conflict(current)) => {
                    super::retry::after_lost_swap(
                        self.store.as_ref(),
                        key,
                        current,
                        head.seq,
                        attempt,
                    )
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Conflict(None))
    }
}

//! How a node answers replica requests (the ones that act on its own store,
//! without routing): [`apply_replica`] runs one against any [`ItemStore`]
//! (the simulator calls it too, so the simulated ring stores by the same
//! rules as a real node), [`serve_replica`] runs one against the node's disk
//! store and turns the outcome into the wire answer, and [`remote_error`]
//! says how a store failure is told to the peer that asked.

use crate::id::Id;
use crate::ownership::Release;
use crate::record::RecordError;
use crate::store::{ItemStore, Store, StoreError};
use crate::wire::{MAX_BATCH, MAX_OWNED, MAX_PROVE, RemoteError, ReplicaRequest, ReplicaResponse};
use std::sync::Arc;

// A record's versions, which a store keeps up to `MAX_VERSIONS_BYTES`,
// go back in one answer frame with room for its header.
const _: () = assert!(crate::store::MAX_VERSIONS_BYTES + 8 * 1024 <= crate::wire::MAX_FRAME);

/// Applies a replica request to a store; `Ok(None)` means the item asked
/// for is not held. A disk store blocks: [`serve_replica`] runs only quick requests
/// inline, the rest on a blocking thread.
pub fn apply_replica<S: ItemStore + ?Sized>(
    store: &S,
    req: ReplicaRequest,
) -> Result<Option<ReplicaResponse>, StoreError> {
    Ok(Some(match req {
        ReplicaRequest::StoreBlock {
            key,
            data,
            claims,
            durable,
        } => {
            store.put_block_with(key, &data, &claims, durable)?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::FetchBlock { key } => match store.serve_block(key)? {
            Some(f) => ReplicaResponse::Block {
                data: f.data,
                claims: f.claims,
            },
            None => return Ok(None),
        },
        ReplicaRequest::Release(rel) => ReplicaResponse::Freed(store.release(&rel)?),
        ReplicaRequest::Owned { owner, after } => {
            ReplicaResponse::Owned(store.owned(&owner, after, MAX_OWNED))
        }
        ReplicaRequest::Space { owner } => ReplicaResponse::Space(store.space(&owner)?),
        ReplicaRequest::StoreRecord {
            record,
            expected_seq,
            durable,
        } => {
            store.put_record_with(&record, expected_seq, durable)?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::FetchRecord { key } => match store.get_versions(key)? {
            v if v.is_empty() => return Ok(None),
            v => ReplicaResponse::Versions(v),
        },
        ReplicaRequest::Sync => {
            store.sync_pending_now()?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::Missing { items } => ReplicaResponse::Missing(store.missing(&items)),
        ReplicaRequest::Prove { nonce, items } => {
            ReplicaResponse::Proofs(store.prove(&nonce, &items))
        }
    }))
}

/// The wire answer to a replica request handled by `store`. An absent item
/// is `NotFound`; a corrupt one too: it was dropped and logged, and
/// `on_corrupt` is told so the node can refetch it from a replica.
pub async fn serve_replica(
    store: Arc<Store>,
    req: ReplicaRequest,
    on_corrupt: impl FnOnce(Id),
) -> Result<ReplicaResponse, RemoteError> {
    match &req {
        ReplicaRequest::Missing { items } if items.len() > MAX_BATCH => {
            return Err(RemoteError::Invalid(format!("more than {MAX_BATCH} items")));
        }
        ReplicaRequest::Prove { items, .. } if items.len() > MAX_PROVE => {
            return Err(RemoteError::Invalid(format!("more than {MAX_PROVE} items")));
        }
        _ => {}
    }
    let res = if is_quick(&req) {
        apply_replica(store.as_ref(), req)
    } else {
        tokio::task::spawn_blocking(move || apply_replica(store.as_ref(), req))
            .await
            .map_err(|e| RemoteError::Storage(format!("store task failed: {e}")))?
    };
    match res {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(RemoteError::NotFound),
        Err(StoreError::Corrupt(key)) => {
            on_corrupt(key);
            Err(RemoteError::NotFound)
        }
        Err(e) => Err(remote_error(&e)),
    }
}

/// Largest block a replica stores without a hand-off to a blocking thread.
const QUICK_BLOCK: usize = 64 << 10;

/// Whether `req` is cheap enough to run on the async thread that received
/// it: no fsync, no hashing of big blocks, no scan. A small put is one
/// buffered write and a rename (tens of µs); handing it to a blocking
/// thread and back costs two thread wake-ups, which on a storage node
/// taking small files were most of its time per request.
fn is_quick(req: &ReplicaRequest) -> bool {
    match req {
        ReplicaRequest::StoreRecord { durable, .. } => !durable,
        ReplicaRequest::StoreBlock { data, durable, .. } => !durable && data.len() <= QUICK_BLOCK,
        ReplicaRequest::FetchRecord { .. } | ReplicaRequest::Missing { .. } => true,
        ReplicaRequest::FetchBlock { .. }
        | ReplicaRequest::Sync
        | ReplicaRequest::Prove { .. }
        | ReplicaRequest::Release(_)
        | ReplicaRequest::Owned { .. }
        | ReplicaRequest::Space { .. } => false,
    }
}

/// The error to send back to the peer whose request failed in the store.
pub fn remote_error(e: &StoreError) -> RemoteError {
    match e {
        StoreError::BadHash => RemoteError::BadHash,
        StoreError::TooLarge(n) => RemoteError::TooLarge(*n as u64),
        StoreError::BadRecord(RecordError::BadSignature | RecordError::BadOwner) => {
            RemoteError::BadSignature
        }
        StoreError::BadRecord(r) => RemoteError::Invalid(r.to_string()),
        StoreError::Stale { offered, current } => RemoteError::Stale {
            offered: *offered,
            current: *current,
        },
        StoreError::Conflict { current } => RemoteError::Conflict { current: *current },
        StoreError::Corrupt(_) | StoreError::Io(_) | StoreError::TooManyVersions(_) => {
            RemoteError::Storage(e.to_string())
        }
        StoreError::NoSpace(m) => RemoteError::NoSpace(m.clone()),
        StoreError::BadClaim(_) => RemoteError::BadSignature,
        StoreError::Released(r) => RemoteError::Released(Box::new(Release::clone(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mapping() {
        assert_eq!(remote_error(&StoreError::BadHash), RemoteError::BadHash);
        assert_eq!(
            remote_error(&StoreError::TooLarge(9)),
            RemoteError::TooLarge(9)
        );
        assert_eq!(
            remote_error(&StoreError::BadRecord(RecordError::BadOwner)),
            RemoteError::BadSignature
        );
        assert!(matches!(
            remote_error(&StoreError::BadRecord(RecordError::NameTooLong(2000))),
            RemoteError::Invalid(_)
        ));
        assert_eq!(
            remote_error(&StoreError::Stale {
                offered: 1,
                current: 2
            }),
            RemoteError::Stale {
                offered: 1,
                current: 2
            }
        );
        assert_eq!(
            remote_error(&StoreError::Conflict { current: None }),
            RemoteError::Conflict { current: None }
        );
        assert!(matches!(
            remote_error(&StoreError::Corrupt(Id::ZERO)),
            RemoteError::Storage(m) if m.contains("corrupt")
        ));
        assert!(matches!(
            remote_error(&StoreError::Io("write /x: disk full".into())),
            RemoteError::Storage(m) if m.contains("/x")
        ));
    }
}

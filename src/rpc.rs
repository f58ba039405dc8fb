//! Typed calls: one type per RPC, with the request it sends and the answer
//! it expects (garage's `rpc_*` on the caller's side).
//!
//! Every caller, whether an async function over the [`Pool`] or a request
//! state machine in [`crate::dht`] that hands its calls to a driver, builds
//! the request with [`Rpc::request`] and reads the answer with
//! [`Rpc::answer`]. An error answer becomes [`CallError::Refused`], a
//! failed call [`CallError::Timeout`] or [`CallError::Unreachable`], and
//! any answer of the wrong kind the one typed [`CallError::Unexpected`]:
//! no call site matches on response enums by hand.
//!
//! The server's side is one exhaustive `match` into `handle_*` functions
//! (`node::handler`).

use crate::id::Id;
use crate::net::{NetError, Pool};
use crate::record::Record;
use crate::wire::{
    ChordRequest, ChordResponse, Claim, ClientRequest, ClientResponse, Freed, Health, ItemVersion,
    NodeInfo, NodeSpace, NodeStatus, OwnedBlock, Peer, Proof, Release, RemoteError, ReplicaRequest,
    ReplicaResponse, Request, Response, RingSpace,
};
use std::time::Duration;

/// Why a call produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer within the call's timeout.
    #[error("no answer in time")]
    Timeout,
    /// The peer could not be reached, or the link broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Refused(RemoteError),
    /// The peer answered with a response of another kind.
    #[error("unexpected answer")]
    Unexpected,
}

impl CallError {
    /// Whether retrying the same call elsewhere cannot help: the request
    /// itself is wrong (bad hash or signature, a stale version, a lost
    /// compare-and-swap, too large, invalid).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CallError::Refused(
                RemoteError::BadHash
                    | RemoteError::BadSignature
                    | RemoteError::Stale { .. }
                    | RemoteError::Conflict { .. }
                    | RemoteError::TooLarge(_)
                    | RemoteError::Invalid(_)
            )
        )
    }

    /// Whether the peer answered that it does not hold the item.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Refused(RemoteError::NotFound))
    }

    /// Whether the peer refused for lack of disk space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, CallError::Refused(RemoteError::NoSpace(_)))
    }
}

impl From<NetError> for CallError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Timeout => CallError::Timeout,
            NetError::Remote(r) => CallError::Refused(r),
            NetError::Unexpected => CallError::Unexpected,
            other => CallError::Unreachable(other.to_string()),
        }
    }
}

/// The answer to a call, as a request machine is fed it: a response
/// (never `Response::Error`, which arrives as [`CallError::Refused`]) or
/// why there is none.
pub type Reply = Result<Response, CallError>;

/// Normalizes a raw call result into a [`Reply`].
pub fn reply_of(r: Result<Response, NetError>) -> Reply {
    match r {
        Ok(Response::Error(e)) => Err(CallError::Refused(e)),
        Ok(other) => Ok(other),
        Err(e) => Err(e.into()),
    }
}

/// One RPC: its request and the typed answer it expects.
pub trait Rpc {
    /// What a good answer carries.
    type Ok;
    /// The request to send.
    fn request(self) -> Request;
    /// The typed answer, or [`CallError::Unexpected`].
    fn answer(resp: Response) -> Result<Self::Ok, CallError>;
    /// [`Rpc::answer`] of a [`Reply`].
    fn parse(reply: Reply) -> Result<Self::Ok, CallError> {
        reply.and_then(Self::answer)
    }
}

/// Calls ring member `peer` (its link must prove the key behind its ID).
pub async fn call<R: Rpc>(pool: &Pool, peer: &Peer, rpc: R) -> Result<R::Ok, CallError> {
    R::parse(reply_of(pool.call_peer(peer, rpc.request()).await))
}

/// Calls whoever listens at `addr` (a client talking to its node), with
/// the pool's call timeout or `timeout`.
pub async fn call_addr<R: Rpc>(
    pool: &Pool,
    addr: &str,
    rpc: R,
    timeout: Option<Duration>,
) -> Result<R::Ok, CallError> {
    let t = timeout.unwrap_or(pool.config().rpc_timeout);
    R::parse(reply_of(
        pool.call_with_timeout(addr, rpc.request(), t).await,
    ))
}

/// Declares an RPC type whose answer is one response pattern.
macro_rules! rpc {
    ($(#[$doc:meta])* $name:ident, $ok:ty, |$req:ident| $build:expr, $pat:pat => $val:expr) => {
        $(#[$doc])*
        impl Rpc for $name {
            type Ok = $ok;
            fn request(self) -> Request {
                let $req = self;
                $build
            }
            fn answer(resp: Response) -> Result<$ok, CallError> {
                match resp {
                    $pat => Ok($val),
                    _ => Err(CallError::Unexpected),
                }
            }
        }
    };
}

// ---- ring maintenance and lookup -------------------------------------

/// Liveness check.
#[derive(Debug, Clone)]
pub struct Ping;
rpc!(Ping, (), |_r| Request::Chord(ChordRequest::Ping),
    Response::Chord(ChordResponse::Pong) => ());

/// A member's predecessor and successor list.
#[derive(Debug, Clone)]
pub struct GetState;

/// What [`GetState`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The member's predecessor, if it knows one.
    pub pred: Option<Peer>,
    /// Its successor list.
    pub succs: Vec<Peer>,
    /// The list came back round to the member: it and its list are the
    /// whole ring.
    pub whole: bool,
}

impl Rpc for GetState {
    type Ok = NodeState;
    fn request(self) -> Request {
        Request::Chord(ChordRequest::GetState)
    }
    fn answer(resp: Response) -> Result<NodeState, CallError> {
        match resp {
            Response::Chord(ChordResponse::State { pred, succs, whole }) => {
                Ok(NodeState { pred, succs, whole })
            }
            Response::Chord(ChordResponse::Busy) => Err(CallError::Refused(RemoteError::Busy)),
            _ => Err(CallError::Unexpected),
        }
    }
}

/// One step of an iterative lookup.
#[derive(Debug, Clone)]
pub struct FindSuccessor(pub Id);

/// What one lookup step answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// The answering node names the key's owner and the nodes after it.
    Found { owner: Peer, next: Vec<Peer> },
    /// Nodes closer to the key, best first.
    Next(Vec<Peer>),
}

impl Rpc for FindSuccessor {
    type Ok = Hop;
    fn request(self) -> Request {
        Request::Chord(ChordRequest::FindSuccessor(self.0))
    }
    fn answer(resp: Response) -> Result<Hop, CallError> {
        match resp {
            Response::Chord(ChordResponse::Found { owner, next }) => Ok(Hop::Found { owner, next }),
            Response::Chord(ChordResponse::Next(n)) => Ok(Hop::Next(n)),
            Response::Chord(ChordResponse::Busy) => Err(CallError::Refused(RemoteError::Busy)),
            _ => Err(CallError::Unexpected),
        }
    }
}

// ---- one node's store ------------------------------------------------

/// Store a block replica.
#[derive(Debug, Clone)]
pub struct StoreBlock {
    pub key: Id,
    /// Shared with every member's request, not copied.
    pub data: bytes::Bytes,
    pub claims: Vec<Claim>,
    pub durable: bool,
}
rpc!(StoreBlock, (), |r| Request::Replica(ReplicaRequest::StoreBlock {
        key: r.key,
        data: r.data,
        claims: r.claims,
        durable: r.durable,
    }),
    Response::Replica(ReplicaResponse::Stored) => ());

/// Read a block replica and its owners' claims.
#[derive(Debug, Clone)]
pub struct FetchBlock(pub Id);
rpc!(FetchBlock, (Vec<u8>, Vec<Claim>),
    |r| Request::Replica(ReplicaRequest::FetchBlock { key: r.0 }),
    Response::Replica(ReplicaResponse::Block { data, claims }) => (data, claims));

/// Apply an owner's release to one node's store.
#[derive(Debug, Clone)]
pub struct ReleaseBlocks(pub std::sync::Arc<Release>);
rpc!(ReleaseBlocks, Freed,
    |r| Request::Replica(ReplicaRequest::Release(std::sync::Arc::unwrap_or_clone(r.0))),
    Response::Replica(ReplicaResponse::Freed(f)) => f);

/// The blocks one node holds for an owner, a page at a time.
#[derive(Debug, Clone)]
pub struct OwnedBy {
    pub owner: [u8; 32],
    pub after: Option<Id>,
}
rpc!(OwnedBy, Vec<OwnedBlock>,
    |r| Request::Replica(ReplicaRequest::Owned { owner: r.owner, after: r.after }),
    Response::Replica(ReplicaResponse::Owned(o)) => o);

/// One node's data file system and its bytes for an owner.
#[derive(Debug, Clone)]
pub struct SpaceOf(pub [u8; 32]);
rpc!(SpaceOf, NodeSpace, |r| Request::Replica(ReplicaRequest::Space { owner: r.0 }),
    Response::Replica(ReplicaResponse::Space(s)) => s);

/// Store a record version (compare-and-swap on `expected_seq` if given).
#[derive(Debug, Clone)]
pub struct StoreRecord {
    pub record: Record,
    pub expected_seq: Option<u64>,
    pub durable: bool,
}
rpc!(StoreRecord, (), |r| Request::Replica(ReplicaRequest::StoreRecord {
        record: r.record,
        expected_seq: r.expected_seq,
        durable: r.durable,
    }),
    Response::Replica(ReplicaResponse::Stored) => ());

/// Read a record replica (tombstones too): its versions, head first.
#[derive(Debug, Clone)]
pub struct FetchRecord(pub Id);
rpc!(FetchRecord, Vec<Record>, |r| Request::Replica(ReplicaRequest::FetchRecord { key: r.0 }),
    Response::Replica(ReplicaResponse::Versions(v)) => v);

/// Make the node's non-durable writes durable.
#[derive(Debug, Clone)]
pub struct Sync;
rpc!(Sync, (), |_r| Request::Replica(ReplicaRequest::Sync),
    Response::Replica(ReplicaResponse::Stored) => ());

/// Which of these items the node lacks.
#[derive(Debug, Clone)]
pub struct Missing(pub Vec<(Id, ItemVersion)>);
rpc!(Missing, Vec<u32>, |r| Request::Replica(ReplicaRequest::Missing { items: r.0 }),
    Response::Replica(ReplicaResponse::Missing(m)) => m);

/// Proofs of holding these items.
#[derive(Debug, Clone)]
pub struct Prove {
    pub nonce: [u8; 32],
    pub items: Vec<(Id, ItemVersion)>,
}

impl Rpc for Prove {
    type Ok = Vec<Proof>;
    fn request(self) -> Request {
        Request::Replica(ReplicaRequest::Prove {
            nonce: self.nonce,
            items: self.items,
        })
    }
    fn answer(resp: Response) -> Result<Vec<Proof>, CallError> {
        match resp {
            Response::Replica(ReplicaResponse::Proofs(p)) => Ok(p),
            _ => Err(CallError::Unexpected),
        }
    }
}

// ---- what a client asks its node -------------------------------------

/// Find a key's owner.
#[derive(Debug, Clone)]
pub struct ClientLookup(pub Id);

/// What [`ClientLookup`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAnswer {
    pub owner: Peer,
    pub next: Vec<Peer>,
    pub hops: u32,
}
rpc!(ClientLookup, LookupAnswer, |r| Request::Client(ClientRequest::Lookup { key: r.0 }),
    Response::Client(ClientResponse::Lookup { owner, next, hops }) => LookupAnswer { owner, next, hops });

/// Store a block on its replicas, owned by the claim's signer.
#[derive(Debug, Clone)]
pub struct ClientPutBlock(pub Vec<u8>, pub Claim);
rpc!(ClientPutBlock, (Id, u32),
    |r| Request::Client(ClientRequest::PutBlock { data: r.0, claim: r.1 }),
    Response::Client(ClientResponse::Put { key, copies }) => (key, copies));

/// Apply an owner's release on the ring.
#[derive(Debug, Clone)]
pub struct ClientRelease(pub Release);
rpc!(ClientRelease, Freed, |r| Request::Client(ClientRequest::Release(r.0)),
    Response::Client(ClientResponse::Freed(f)) => f);

/// The ring's space as an owner sees it.
#[derive(Debug, Clone)]
pub struct ClientSpace(pub [u8; 32]);
rpc!(ClientSpace, RingSpace, |r| Request::Client(ClientRequest::Space { owner: r.0 }),
    Response::Client(ClientResponse::Space(s)) => s);

/// Read a block from its replicas.
#[derive(Debug, Clone)]
pub struct ClientGetBlock(pub Id);
rpc!(ClientGetBlock, Vec<u8>, |r| Request::Client(ClientRequest::GetBlock { key: r.0 }),
    Response::Client(ClientResponse::Block(d)) => d);

/// Store a record version on its replicas.
#[derive(Debug, Clone)]
pub struct ClientPutRecord {
    pub record: Record,
    pub expected_seq: Option<u64>,
}
rpc!(ClientPutRecord, (Id, u32), |r| Request::Client(ClientRequest::PutRecord {
        record: r.record,
        expected_seq: r.expected_seq,
    }),
    Response::Client(ClientResponse::Put { key, copies }) => (key, copies));

/// Read the newest versions of a record, tombstones included (head
/// first; more than one while concurrent versions wait for a merge).
#[derive(Debug, Clone)]
pub struct ClientGetLatestRecord(pub Id);
rpc!(ClientGetLatestRecord, Vec<Record>, |r| Request::Client(ClientRequest::GetLatestRecord { key: r.0 }),
    Response::Client(ClientResponse::Versions(v)) => v);

/// The node's view of itself.
#[derive(Debug, Clone)]
pub struct ClientInfo;
rpc!(ClientInfo, NodeInfo, |_r| Request::Client(ClientRequest::Info),
    Response::Client(ClientResponse::Info(i)) => i);

/// The node, its ring contact and its mount (`peerstore status`).
#[derive(Debug, Clone)]
pub struct ClientStatus;
rpc!(ClientStatus, NodeStatus, |_r| Request::Client(ClientRequest::Status),
    Response::Client(ClientResponse::Status(s)) => *s);

/// The node's counts, ring contact and last repair pass (dashboards).
#[derive(Debug, Clone)]
pub struct ClientHealth;
rpc!(ClientHealth, Health, |_r| Request::Client(ClientRequest::Health),
    Response::Client(ClientResponse::Health(h)) => h);

/// Pin (or unpin) a subtree of the node's mount (`peerstore pin`).
#[derive(Debug, Clone)]
pub struct ClientPin {
    pub path: String,
    pub pin: bool,
}
rpc!(ClientPin, NodeStatus, |r| Request::Client(ClientRequest::Pin { path: r.path, pin: r.pin }),
    Response::Client(ClientResponse::Status(s)) => *s);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_typed_and_wrong_kinds_are_one_error() {
        let ok = Response::Replica(ReplicaResponse::Stored);
        assert_eq!(Sync::parse(Ok(ok.clone())), Ok(()));
        assert_eq!(FetchBlock::parse(Ok(ok)), Err(CallError::Unexpected));
        let busy = Response::Chord(ChordResponse::Busy);
        assert_eq!(
            GetState::parse(Ok(busy)),
            Err(CallError::Refused(RemoteError::Busy))
        );
        assert_eq!(
            reply_of(Ok(Response::Error(RemoteError::NotFound))),
            Err(CallError::Refused(RemoteError::NotFound))
        );
        assert!(CallError::Refused(RemoteError::NotFound).is_not_found());
        assert!(CallError::Refused(RemoteError::BadHash).is_final());
        assert!(!CallError::Timeout.is_final());
        assert_eq!(CallError::from(NetError::Timeout), CallError::Timeout);
    }
}

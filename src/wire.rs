//! The messages peers exchange and how they are framed on a byte stream.
//!
//! A frame is `u32` big-endian length `L`, then `L` bytes: one version byte
//! ([`VERSION`]) followed by the postcard encoding of a [`Frame`]. `L` counts
//! the version byte. A frame longer than [`MAX_FRAME`] is refused before any
//! of it is buffered, so a peer claiming a 4 GiB frame costs nothing. The codec
//! works on byte buffers, not sockets, so it is tested without I/O.
//!
//! Requests come in three families, one enum each, each with its response
//! enum beside it: [`ChordRequest`] (ring maintenance and lookup steps),
//! [`ReplicaRequest`] (one node's own store, no routing) and [`ClientRequest`]
//! (what the command-line client asks of any node, which routes it). Any
//! request may instead be answered with a [`RemoteError`].
//!
//! The item types replica requests carry ([`ItemVersion`], [`Proof`]) and
//! [`MAX_BLOCK`] are defined in [`crate::item`] and re-exported here.

use crate::id::Id;
use crate::record::Record;
use serde::{Deserialize, Serialize};

pub use crate::item::{ItemVersion, MAX_BLOCK, NodeSpace, Proof, RingSpace, proof_of};
pub use crate::ownership::{Claim, Freed, OwnedBlock, Release};

/// Wire protocol version, the first byte of every frame body.
pub const VERSION: u8 = 4;
/// Largest frame body (version byte included): a full block plus headroom.
pub const MAX_FRAME: usize = MAX_BLOCK + 64 * 1024;
/// Largest batch of items in one [`ReplicaRequest::Missing`].
pub const MAX_BATCH: usize = 4096;
/// Largest batch of items in one [`ReplicaRequest::Prove`] (each costs the
/// prover a read and a hash of the item).
pub const MAX_PROVE: usize = 256;
/// Most blocks in one `Owned` answer.
pub const MAX_OWNED: usize = 4096;

/// A ring member: its ID and the address its node listens on.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// SHA-256 of the node's public key.
    pub id: Id,
    /// `host:port` of the node's listener.
    pub addr: String,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

/// One frame on a connection: a request or the response to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A call; the answer carries the same `id`.
    Request { id: u64, body: Request },
    /// The answer to request `id`.
    Response { id: u64, body: Response },
}

/// Every request, by family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Chord(ChordRequest),
    Replica(ReplicaRequest),
    Client(ClientRequest),
}

impl Request {
    /// The request's family (`chord`, `replica`, `client`) and kind (its
    /// variant's name), for metrics.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Request::Chord(r) => ("chord", r.into()),
            Request::Replica(r) => ("replica", r.into()),
            Request::Client(r) => ("client", r.into()),
        }
    }
}

/// Every response, by family, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Chord(ChordResponse),
    Replica(ReplicaResponse),
    Client(ClientResponse),
    Error(RemoteError),
}

/// Ring maintenance and lookup steps (the `chord` state machine's messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ChordRequest {
    /// Liveness check; always answered, even by a joining node. → `Pong`.
    Ping,
    /// Ask for predecessor and successor list. → `State` or `Busy`.
    GetState,
    /// "I think I am your predecessor" (answered `Ack`; the receiver rectifies).
    Notify(Peer),
    /// One step of an iterative lookup for `key`. → `Found` or `Next`.
    FindSuccessor(Id),
    /// `peer` is leaving gracefully; its keys are already handed over.
    /// `succs` is its successor list, for its predecessor. → `Ack`.
    Leaving { peer: Peer, succs: Vec<Peer> },
}

/// Answers to [`ChordRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChordResponse {
    Pong,
    Ack,
    /// The node's state is in flux (it is joining): retry later.
    Busy,
    /// Predecessor and successor list of the answering node; `whole` when
    /// the list came back round to the node (it and its list are the whole
    /// ring).
    State {
        pred: Option<Peer>,
        succs: Vec<Peer>,
        whole: bool,
    },
    /// The key's owner, and the nodes that follow it (its replicas come first).
    Found {
        owner: Peer,
        next: Vec<Peer>,
    },
    /// Nodes closer to the key, best first: ask them.
    Next(Vec<Peer>),
}

/// Operations on the receiving node's own store; no routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ReplicaRequest {
    /// Store a block replica. → `Stored`. With `durable` it is fsynced
    /// before the answer; without, it is visible at once and made durable
    /// by the node's periodic flush or the next `Sync`.
    StoreBlock {
        key: Id,
        /// Encoded as a byte string, like a `Vec<u8>`; shared, so a put
        /// to r members does not copy the block per member, and decoded
        /// as a slice of the received frame ([`crate::frame_bytes`]).
        #[serde(deserialize_with = "crate::frame_bytes::deserialize")]
        data: bytes::Bytes,
        /// The owners' claims (refused with `Released` if an owner's kept
        /// release covers every one).
        claims: Vec<Claim>,
        durable: bool,
    },
    /// Read a local block replica and its owners' claims. → `Block`.
    FetchBlock { key: Id },
    /// Store a record version (refused if not newer). `expected_seq`
    /// makes it a compare-and-swap on the current sequence. → `Stored`.
    StoreRecord {
        record: Record,
        expected_seq: Option<u64>,
        durable: bool,
    },
    /// Make every item this node stored without `durable` durable now. →
    /// `Stored`.
    Sync,
    /// Read a local record: every version held, head first (more than
    /// one while concurrent versions wait for a merge). → `Versions`.
    FetchRecord { key: Id },
    /// Which of these items does the node lack (or hold an older version of)?
    /// At most [`MAX_BATCH`] items. → `Missing`.
    Missing { items: Vec<(Id, ItemVersion)> },
    /// Prove holding these items: for each, a hash over `nonce`, the key
    /// and the held bytes ([`proof_of`]). At most [`MAX_PROVE`] items. →
    /// `Proofs`.
    Prove {
        nonce: [u8; 32],
        items: Vec<(Id, ItemVersion)>,
    },
    /// Apply an owner's release (kept as a tombstone). → `Freed`.
    Release(Release),
    /// Blocks claimed by `owner` held here, in key order after `after`,
    /// at most [`MAX_OWNED`]. → `Owned`.
    Owned { owner: [u8; 32], after: Option<Id> },
    /// This node's data file system, and the bytes it holds for
    /// `owner`. → `Space`.
    Space { owner: [u8; 32] },
}

/// Answers to [`ReplicaRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicaResponse {
    Stored,
    Block {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        claims: Vec<Claim>,
    },
    /// A record's versions, head first (never empty).
    Versions(Vec<Record>),
    /// Indexes into the request's item list.
    Missing(Vec<u32>),
    /// One proof per item asked, in order.
    Proofs(Vec<Proof>),
    Freed(Freed),
    Owned(Vec<OwnedBlock>),
    Space(NodeSpace),
}

/// What the command-line client asks of any node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ClientRequest {
    /// Find the owner of `key`. → `Lookup`.
    Lookup { key: Id },
    /// Store a block on its r replicas, owned by `claim`'s signer. → `Put`.
    PutBlock {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        claim: Claim,
    },
    /// Read a block from its replicas. → `Block`.
    GetBlock { key: Id },
    /// Store a record on its r replicas. → `Put`.
    PutRecord {
        record: Record,
        expected_seq: Option<u64>,
    },
    /// Read a record from its replicas. → `Record`.
    GetRecord { key: Id },
    /// The node's view of itself. → `Info`.
    Info,
    /// Read the newest versions of a record, tombstones included. →
    /// `Versions` (head first).
    GetLatestRecord { key: Id },
    /// Apply an owner's release on every replica of its blocks. → `Freed`.
    Release(Release),
    /// The ring's capacity, and what `owner` stores on it. → `Space`.
    Space { owner: [u8; 32] },
    /// The node, its ring contact and its mount, for `peerstore status`
    /// (answered by members and non-members alike). → `Status`.
    Status,
    /// Keep the subtree at `path` of the mounted folder in this machine's
    /// caches for reading offline (`pin`), or stop (`!pin`). → `Status`.
    Pin { path: String, pin: bool },
    /// The node's counts, ring contact and last repair pass, for a
    /// dashboard's picture of the ring. → `Health`.
    Health,
}

/// Conflict copies listed in a status answer at most (the newest).
pub const MAX_STATUS_CONFLICTS: usize = 64;

/// A node's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub info: NodeInfo,
    /// Whether the node is a ring member (else it is joining, or was cut
    /// off and is trying to rejoin).
    pub member: bool,
    /// The folder this node mounts, if any.
    pub mount: Option<MountStatus>,
}

/// What a node's mount reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountStatus {
    /// The mount point.
    pub dir: String,
    /// Conflict copies made here, oldest first (at most
    /// [`MAX_STATUS_CONFLICTS`], the newest).
    pub conflicts: Vec<ConflictInfo>,
    /// What the mount keeps on this machine for working offline.
    pub local: LocalState,
}

impl MountStatus {
    /// The conflict copies still there (open).
    pub fn open_conflicts(&self) -> impl Iterator<Item = &ConflictInfo> {
        self.conflicts.iter().filter(|c| c.present)
    }
}

/// A mount's offline state: whether its ring is in reach, the journal
/// of writes waiting for it, and what is pinned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// Whether the ring is in reach (else writes go to the journal).
    pub online: bool,
    /// Journal entries waiting for the ring, and their bytes.
    pub journal_entries: u64,
    pub journal_bytes: u64,
    /// Pinned paths, and the bytes of their blocks held here.
    pub pinned: Vec<String>,
    pub pinned_bytes: u64,
}

/// One conflict copy a mount made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// The file's path in the folder.
    pub path: String,
    /// The copy's path.
    pub copy: String,
    /// When, in seconds since the Unix epoch (this machine's clock).
    pub at: i64,
    /// Whether the copy is still there (open), or was moved or deleted.
    pub present: bool,
}

/// A node's description of itself, for `peerstore ring`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub me: Peer,
    pub pred: Option<Peer>,
    pub succs: Vec<Peer>,
    /// Distinct finger table entries.
    pub fingers: Vec<Peer>,
    pub blocks: u64,
    pub records: u64,
    pub bytes: u64,
    pub replicas: u32,
}

/// Answers to [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    Lookup {
        owner: Peer,
        next: Vec<Peer>,
        hops: u32,
    },
    /// Stored under `key` on `copies` nodes.
    Put {
        key: Id,
        copies: u32,
    },
    Block(#[serde(with = "serde_bytes")] Vec<u8>),
    Record(Record),
    /// A record's versions, head first.
    Versions(Vec<Record>),
    Info(NodeInfo),
    Freed(Freed),
    Space(RingSpace),
    /// Boxed: the largest answer by far (encoded the same).
    Status(Box<NodeStatus>),
    Health(Health),
}

/// A node's answer to `Health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub info: NodeInfo,
    /// Whether the node is a ring member.
    pub member: bool,
    /// Its last repair pass (none yet: `None`).
    pub repair: Option<RepairState>,
}

/// How a node's last repair pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairState {
    /// Milliseconds since it ended.
    pub age_ms: u64,
    /// Items it copied to replicas that lacked them.
    pub copied: u64,
    /// Items (or calls) it could not get to r copies (the next pass
    /// retries them).
    pub backlog: u64,
}

/// An error that crosses the wire as an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("node busy, retry later")]
    Busy,
    #[error("not found")]
    NotFound,
    #[error("block bytes do not hash to the key")]
    BadHash,
    #[error("record signature does not verify")]
    BadSignature,
    #[error("record sequence number {offered} is not newer than {current}")]
    Stale { offered: u64, current: u64 },
    #[error("compare-and-swap failed: current sequence is {current:?}")]
    Conflict { current: Option<u64> },
    #[error("too large: {0} bytes")]
    TooLarge(u64),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("unexpected message")]
    Unexpected,
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("not a ring member: {0}")]
    NotMember(String),
    /// The block's owner released it: the release, to apply too.
    #[error("released by its owner")]
    Released(Box<Release>),
}

/// Why a byte stream could not be decoded into a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unsupported protocol version {0} (this node speaks {VERSION})")]
    BadVersion(u8),
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

/// Appends the encoding of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, VERSION]);
    if let Err(e) = crate::postcard_tail::append(frame, out) {
        out.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Reads the length prefix at the start of `buf`, if complete, and checks it
/// against [`MAX_FRAME`] before anything else is read.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(Some(len))
}

/// Decodes one frame body (version byte and postcard bytes, without the
/// length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let (&version, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if version != VERSION {
        return Err(FrameError::BadVersion(version));
    }
    match postcard::take_from_bytes::<Frame>(rest) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, extra)) => Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            extra.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// [`decode_body`] of a received frame body that large byte strings in it
/// share rather than copy ([`crate::frame_bytes`]).
pub fn decode_shared(body: &bytes::Bytes) -> Result<Frame, FrameError> {
    crate::frame_bytes::with_frame(body, decode_body)
}

/// Decodes the first complete frame in `buf`: `Ok(Some((frame, used)))`,
/// `Ok(None)` if more bytes are needed, or an error that ends the stream.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((decode_body(&buf[4..4 + len])?, 4 + len)))
}

/// The peer with ID `small(n)` and address `n<n>`, for tests.
#[cfg(test)]
pub(crate) fn test_peer(n: u8) -> Peer {
    Peer {
        id: crate::id::small(n),
        addr: format!("n{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame::Request {
            id: 42,
            body: Request::Replica(ReplicaRequest::StoreBlock {
                key: Id::hash(b"abc"),
                data: bytes::Bytes::from_static(b"abc"),
                claims: Vec::new(),
                durable: true,
            }),
        }
    }

    #[test]
    fn frames_encode_as_the_readme_shows() {
        let bytes = |f: Frame| {
            let mut out = Vec::new();
            encode(&f, &mut out).unwrap();
            out
        };
        let ping = Frame::Request {
            id: 7,
            body: Request::Chord(ChordRequest::Ping),
        };
        assert_eq!(bytes(ping), [0, 0, 0, 5, 4, 0, 7, 0, 0]);
        let pong = Frame::Response {
            id: 7,
            body: Response::Chord(ChordResponse::Pong),
        };
        assert_eq!(bytes(pong), [0, 0, 0, 5, 4, 1, 7, 0, 0]);
        let info = Frame::Request {
            id: 1,
            body: Request::Client(ClientRequest::Info),
        };
        assert_eq!(bytes(info), [0, 0, 0, 5, 4, 0, 1, 2, 5]);
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        encode(&sample(), &mut buf).unwrap();
        let (f, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(f, sample());
        let (g, used2) = decode(&buf[used..]).unwrap().unwrap();
        assert_eq!(g, sample());
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn huge_length_is_refused_from_the_prefix() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode(&buf), Err(FrameError::TooLarge(u32::MAX as usize)));
        assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
    }

    #[test]
    fn bad_version_and_garbage_are_errors() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        buf[4] = 99;
        assert_eq!(decode(&buf), Err(FrameError::BadVersion(99)));
        let garbage = [0, 0, 0, 5, VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode(&garbage), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn oversized_frame_is_not_encoded() {
        let f = Frame::Request {
            id: 1,
            body: Request::Client(ClientRequest::PutBlock {
                data: vec![0; MAX_FRAME + 1],
                claim: Claim {
                    owner: [0; 32],
                    time: 0,
                    sig: Vec::new(),
                },
            }),
        };
        let mut buf = vec![1, 2, 3];
        assert!(matches!(encode(&f, &mut buf), Err(FrameError::TooLarge(_))));
        assert_eq!(buf, vec![1, 2, 3]);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}

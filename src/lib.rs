//! PeerStore: a peer-to-peer, end-to-end encrypted file store on a Chord ring.
//!
//! # Layout
//!
//! Bottom up; a module uses only the ones above it in this list.
//!
//! - [`id`]: 256-bit identifiers and ring arithmetic.
//! - [`clock`]: version vectors, telling replaced from concurrent versions.
//! - [`grant`]: writer grants for shared folders, and the signature
//!   layouts of the versions that use them.
//! - [`record`]: signed, sequence-numbered mutable records with clocks.
//! - [`account_record`]: account records (found by name) and the rules
//!   storage nodes apply to them.
//! - [`inbox_record`]: inbox records (anyone appends, the owner removes)
//!   and the rules storage nodes apply to them.
//! - [`item`]: what the ring stores: item versions, the block size limit,
//!   proofs of holding.
//! - [`ownership`]: owners' signed claims on blocks and releases of them.
//! - [`wire`]: message enums and length-prefixed framing.
//! - [`keyfile`]: private key files (mode 0600, atomic).
//! - [`metrics`]: the process's counters and histograms, in the
//!   Prometheus text format.
//! - [`net`]: secure links (Noise), multiplexed calls with timeouts, the
//!   bounded server.
//! - [`rpc`]: one type per RPC: the request it sends, the answer it expects.
//! - [`network`]: ring admission: the network secret and join tickets.
//! - [`chord`]: the ring maintenance and lookup state machine (sans I/O).
//! - [`replica`]: which nodes must hold a key; grouping keys by owner for repair.
//! - [`store`]: this node's blocks and records on disk.
//! - [`dht`]: put/get of blocks and records, lookups and repair, as request
//!   state machines without I/O, and their driver.
//! - [`fs`]: files and directories as encrypted objects (the vault), over
//!   any [`fs::BlockStore`].
//! - [`account`]: user accounts: the password-sealed keyring, creating,
//!   logging in, the device session.
//! - [`cache`]: the local block cache in front of a vault's store.
//! - [`mount`]: the FUSE folder over a vault.
//! - [`node`]: the node process: drives `chord` over `net`, serves requests,
//!   repairs replicas, leaves gracefully; the DHT as a vault's block store.
//! - [`http`]: a node's web endpoint: `/metrics`, `/api/status` and the
//!   dashboard page with a picture of the ring.
//! - [`cli`]: the command-line client commands, and the vault's store that
//!   talks to one node.
//! - [`sim`]: a deterministic, in-process network of nodes, for tests and
//!   benchmarks.
//! - [`version`]: what `peerstore --version` prints: the release, the git
//!   commit, the wire and disk format versions.

pub mod account;
pub mod account_record;
pub mod cache;
pub mod chord;
pub mod cli;
pub mod clock;
pub mod dht;
pub mod frame_bytes;
pub mod fs;
pub mod grant;
pub mod http;
pub mod id;
pub mod inbox_record;
pub mod item;
pub mod journal;
pub mod keyfile;
pub mod metrics;
pub mod mount;
pub mod net;
pub mod network;
pub mod node;
pub mod ownership;
pub mod postcard_tail;
pub mod record;
pub mod replica;
pub mod rpc;
pub mod sim;
pub mod store;
pub mod version;
pub mod wire;

//! The node process: one ring member with its store, serving peers and
//! clients, repairing replicas, and leaving gracefully on request.
//!
//! Start-up: load (or create) the node key and the network secret in the
//! data directory, open the store, bind the listener, then create a ring or
//! join one. Every link, in and out, is a Noise link keyed by the node key
//! and the network secret. Running: the
//! server task answers requests, the ring timers keep the ring correct, the
//! repair loop keeps r copies. Shutdown (SIGINT/SIGTERM, or the returned
//! [`RunningNode::shutdown`]): hand every item to the successors, tell the
//! neighbours, hand over what arrived meanwhile, stop serving.
//!
//! Replica requests are answered by [`apply_replica`] (shared with the
//! simulator) and [`serve_replica()`]; store failures cross the wire as
//! [`remote_error`] says. A node's [`Dht`] is also a vault's
//! [`BlockStore`](crate::fs::BlockStore), for the mount inside a node
//! process; [`fs_error`] says what a node's refusal means to a vault.

mod block_store;
mod handler;
pub mod health;
pub mod heap;
pub mod identity;
mod members;
pub mod orphans;
pub mod pins;
mod repair;
pub mod ring;
mod scrub;
pub mod seen;
mod serve_replica;
pub mod status;
mod transport;

pub use block_store::fs_error;
pub use serve_replica::{apply_replica, remote_error, serve_replica};
pub use transport::NodeTransport;

use crate::chord::{ChordNode, Config as ChordConfig};
use crate::dht::{Dht, Millis};
use crate::id::Id;
use crate::net::{LinkKeys, NetConfig, Pool, ServerConfig, serve};
use crate::network::AdmissionError;
use crate::store::Store;
use crate::wire::Peer;
use members::Members;
use ring::{Ring, Timers};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Address other nodes should use (defaults to the bound address).
    pub advertise: Option<String>,
    /// Data directory: node key and store.
    pub data: PathBuf,
    /// A ring member to join through; `None` starts a new ring.
    pub join: Option<String>,
    /// Copies kept of every item (r).
    pub replicas: usize,
    /// Successor list length (s ≥ r).
    pub succ_list: usize,
    /// Ring timer periods.
    pub timers: Timers,
    /// Period of the repair pass.
    pub repair_every: Duration,
    /// Timeout of every call to a peer.
    pub rpc_timeout: Duration,
    /// Server limits.
    pub server: ServerConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "127.0.0.1:7400".into(),
            advertise: None,
            data: PathBuf::from("peerstore-data"),
            join: None,
            replicas: 3,
            succ_list: 8,
            timers: Timers::default(),
            repair_every: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(3),
            server: ServerConfig::default(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    #[error("{0}")]
    Admission(#[from] AdmissionError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Join(#[from] ring::JoinError),
}

/// Why a graceful leave did not hand everything over.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// No successor took the items (they stay in the data directory).
    #[error("no successor accepted the hand-off: {0}")]
    HandOff(String),
}

/// A running node's state, held once and shared by the server, the
/// background loops and every DHT client of the node.
pub struct Core {
    /// This node's ring ID.
    pub me: Id,
    /// Ring state and its driver (with the route cache).
    pub ring: Arc<Ring>,
    /// This node's blocks and records.
    pub store: Arc<Store>,
    /// Connections to other nodes.
    pub pool: Pool,
    /// Copies kept of every item.
    pub replicas: usize,
    /// Callers recently verified as ring members.
    members: Members,
    /// The origin of [`Core::now`].
    started: std::time::Instant,
    /// What the node's mount reports for `peerstore status` (set once
    /// the folder is mounted).
    pub mount_report: std::sync::OnceLock<MountReport>,
    /// Pins or unpins a path of the node's mount (set once mounted).
    pub pin_hook: std::sync::OnceLock<PinHook>,
    /// How the last repair pass ended.
    pub last_repair: std::sync::Mutex<Option<health::LastRepair>>,
    /// The mount's journal, uploads and cache, for `/metrics` (set once
    /// mounted).
    pub mount_levels: std::sync::OnceLock<health::MountLevelsHook>,
}

/// Reports the state of a node's mount (see [`Core::mount_report`]).
pub type MountReport =
    Box<dyn Fn() -> futures::future::BoxFuture<'static, crate::wire::MountStatus> + Send + Sync>;

/// Pins (`true`) or unpins a path of the mount (see [`Core::pin_hook`]).
pub type PinHook = Box<
    dyn Fn(String, bool) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

impl Core {
    /// Milliseconds since the node started (the request machines' clock).
    pub fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }
}

/// A running node: its state and a DHT client over it.
pub struct Node {
    /// The state.
    pub core: Arc<Core>,
    /// Put/get through the ring, for the node's own work (client requests,
    /// repair, hand-off).
    pub dht: Dht<NodeTransport>,
}

impl Node {
    /// A DHT client of this node, for the file system layer (with its own
    /// record of writes to make durable on `sync`).
    pub fn dht_client(&self) -> Dht<NodeTransport> {
        Dht::new(
            NodeTransport {
                core: Arc::clone(&self.core),
            },
            self.core.replicas,
        )
    }

    /// Whether this node is in contact with its ring
    /// ([`ChordNode::in_contact`](crate::chord::ChordNode::in_contact)), as
    /// a callback: a mount that is not journals (see [`crate::journal`]).
    pub fn contact(&self) -> crate::journal::Contact {
        let core = Arc::clone(&self.core);
        Arc::new(move || core.ring.view(|c| c.in_contact()))
    }

    /// The ring driver.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.core.ring
    }

    /// A callback that refetches a block found corrupt from its replicas.
    fn refetcher(&self) -> impl FnOnce(Id) + use<> {
        let dht = self.dht_client();
        let store = Arc::clone(&self.core.store);
        move |key: Id| {
            tokio::spawn(async move {
                match dht.get_owned_block(key).await {
                    Ok((data, claims)) => {
                        let res = tokio::task::spawn_blocking(move || {
                            store.put_block(key, &data, &claims)
                        })
                        .await;
                        if matches!(res, Ok(Ok(_))) {
                            log::info!(
                                "block {}: corrupt copy replaced from a replica",
                                key.short()
                            );
                        }
                    }
                    Err(e) => log::warn!(
                        "block {}: corrupt copy could not be refetched: {e}",
                        key.short()
                    ),
                }
            });
        }
    }
}

/// A node that has started: its address, and the handle to stop it.
pub struct RunningNode {
    /// The node's state.
    pub node: Arc<Node>,
    /// The address peers use.
    pub addr: String,
    /// Flipped to stop background tasks and the server.
    stop: watch::Sender<bool>,
    /// The server task.
    server: JoinHandle<()>,
    /// The data directory (where the members seen are saved at the end).
    data: PathBuf,
}

/// Starts a node: identity, store, listener, ring membership, background
/// tasks. Returns once the node is a ring member.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode, NodeError> {
    if cfg.replicas == 0 || cfg.replicas > cfg.succ_list {
        return Err(NodeError::Config(format!(
            "--replicas must be between 1 and the successor list length ({}), got {}",
            cfg.succ_list, cfg.replicas
        )));
    }
    let key = identity::load_or_create(&cfg.data)?;
    let id = key.id();
    // The network secret of the data directory (a joining node's ticket
    // was adopted into it already); the first node creates a network.
    let (secret, created) = crate::network::load_or_init(&cfg.data)?;
    if created {
        log::info!("created a new network {}", secret.network_id());
    }
    let data = cfg.data.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&data.join("store")))
            .await
            .map_err(|e| NodeError::Config(format!("store task failed: {e}")))??,
    );
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| NodeError::Listen(cfg.listen.clone(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Listen(cfg.listen.clone(), e))?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    let me = Peer {
        id,
        addr: addr.clone(),
    };
    crate::network::save_address(&cfg.data, &addr)?;
    let keys = LinkKeys { key, secret };
    let local_ip = Some(bound.ip()).filter(|ip| !ip.is_unspecified());
    let pool = Pool::new(
        NetConfig {
            rpc_timeout: cfg.rpc_timeout,
            connect_timeout: cfg.rpc_timeout,
            local_ip,
        },
        keys.clone(),
    );
    let chord = ChordNode::new(
        me,
        ChordConfig {
            succ_list_len: cfg.succ_list,
            ..ChordConfig::default()
        },
    );
    let ring = Ring::new(chord, pool.clone());
    let core = Arc::new(Core {
        me: id,
        ring: Arc::clone(&ring),
        store,
        pool,
        replicas: cfg.replicas,
        members: Members::default(),
        started: std::time::Instant::now(),
        mount_report: std::sync::OnceLock::new(),
        pin_hook: std::sync::OnceLock::new(),
        last_repair: std::sync::Mutex::new(None),
        mount_levels: std::sync::OnceLock::new(),
    });
    let node = Arc::new(Node {
        dht: Dht::new(
            NodeTransport {
                core: Arc::clone(&core),
            },
            cfg.replicas,
        ),
        core,
    });
    let (stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&node),
        cfg.server.clone(),
        keys,
        stop_rx.clone(),
    ));
    // Members seen before a restart: merge probes go through them.
    let remembered = seen::load(&cfg.data);
    match &cfg.join {
        None => ring.with(|c| c.create()),
        // A node that was a member before starts even when its ring is
        // out of reach (a machine offline): alone, its mount journaling,
        // until a merge probe finds the ring again.
        Some(via) if !remembered.is_empty() => {
            if let Err(e) = ring.join(via, 3).await {
                log::warn!(
                    "{e}; starting cut off from the ring (it remembers {} members, and rejoins when one answers)",
                    remembered.len()
                );
                ring.with(|c| c.create());
            }
        }
        Some(via) => {
            if let Err(e) = ring.join(via, 6).await {
                let _ = stop.send(true);
                return Err(NodeError::Join(e));
            }
        }
    }
    log::info!("node {} listening on {addr}, ring member", id.short());
    ring.with(|c| c.remember_all(&remembered));
    tokio::spawn(seen::save_loop(
        Arc::clone(&ring),
        cfg.data.clone(),
        remembered,
        stop_rx.clone(),
    ));
    tokio::spawn(Arc::clone(&ring).run_timers(cfg.timers.clone(), stop_rx.clone()));
    tokio::spawn(repair_loop(
        Arc::clone(&node),
        cfg.repair_every,
        stop_rx.clone(),
    ));
    tokio::spawn(heap::trim_loop(stop_rx.clone()));
    tokio::spawn(scrub::scrub_loop(Arc::clone(&node), stop_rx.clone()));
    tokio::spawn(flush_loop(Arc::clone(&node.core.store), stop_rx));
    Ok(RunningNode {
        node,
        addr,
        stop,
        server,
        data: cfg.data.clone(),
    })
}

/// How often writes accepted without fsync are made durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Makes the store's non-durable writes durable every [`FLUSH_EVERY`], so a
/// write visible to readers is on disk within about a second even if its
/// writer never asks (`fsync` asks at once).
async fn flush_loop(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
            _ = stop.changed() => {}
        }
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.sync_pending()).await {
            Ok(Err(e)) => log::error!("flushing writes to disk failed: {e}"),
            // The runtime is shutting down; leaving syncs the store itself.
            Err(e) if e.is_cancelled() => return,
            Err(e) => log::error!("flush task failed: {e}"),
            Ok(Ok(_)) => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs repair passes every `period`, and shortly after topology changes.
async fn repair_loop(node: Arc<Node>, period: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = node.core.ring.topology.notified() => {
                // Let the ring settle a moment before moving data.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let s = node.repair_pass().await;
        node.note_repair(&s);
        if s.failures > 0 {
            log::warn!(
                "repair: {} groups, {} items copied, {} surplus copies dropped, {} failures: {}",
                s.groups,
                s.pushed,
                s.dropped,
                s.failures,
                s.reasons.join("; ")
            );
        } else if s.pushed > 0 || s.dropped > 0 {
            log::info!(
                "repair: {} groups, {} items copied, {} surplus copies dropped",
                s.groups,
                s.pushed,
                s.dropped
            );
        }
    }
}

impl RunningNode {
    /// Leaves the ring gracefully: hand items over, tell the neighbours,
    /// hand over what arrived meanwhile, stop serving. `Err` if items could
    /// not be handed to any live node (they stay on disk).
    pub async fn shutdown(self) -> Result<(), LeaveError> {
        let node = &self.node;
        // The server keeps answering while items move: peers may still
        // route to this node until they hear it is leaving.
        let first = node.hand_off().await;
        node.core.ring.leave(Duration::from_secs(5)).await;
        let second = node.hand_off().await;
        // The members it knew, for a restart without a ticket (saved here,
        // waited for: a save left to a background task dies with the
        // runtime).
        seen::save_now(&node.core.ring, self.data.clone()).await;
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        let store = Arc::clone(&node.core.store);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.sync_pending()).await {
            log::error!("flushing writes to disk failed: {e}");
        }
        match (first, second) {
            // The last node (no successor at the second hand-off, after
            // leaving) says so once.
            (Ok(_), Ok(repair::HandedOff::NoSuccessor(n))) => {
                log::warn!("last node of the ring: its {n} items stay in its data directory");
                Ok(())
            }
            (Ok(a), Ok(b)) => {
                log::info!(
                    "left the ring; handed over {} items its successors lacked (they held the rest already)",
                    a.copied() + b.copied()
                );
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

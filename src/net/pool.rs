//! One persistent [`Connection`] per address, shared by every caller.
//!
//! Invariants: the map holds at most one connection per address and at
//! most `capacity` in all; a closed connection is replaced on next use.
//! Connecting happens outside the lock, so two callers may race to connect
//! to the same address: the first to finish is cached and the other's
//! connection is dropped (closed) once its own call is done, so no stream
//! leaks. Evicting a connection that calls are still using does not cut
//! them off: they hold their own `Arc`, and the stream closes with the last.

use super::handshake::{HandshakeError, initiate};
use super::{Connection, LinkKeys, NetError};
use crate::id::Id;
use crate::wire::{Peer, Request, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Connections a [`Pool`] keeps by default.
pub const DEFAULT_POOL_CAPACITY: usize = 1024;

/// Client-side timeouts.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// How long a call waits for its answer, unless told otherwise.
    pub rpc_timeout: Duration,
    /// How long opening a TCP connection may take, and then the link
    /// handshake again.
    pub connect_timeout: Duration,
    /// Source address of outgoing connections (a node uses its listen
    /// address, so peers count its connections under its own address).
    pub local_ip: Option<IpAddr>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            local_ip: None,
        }
    }
}

/// A cloneable handle on a shared set of connections, keyed by address.
#[derive(Clone)]
pub struct Pool {
    /// The state every clone shares.
    inner: Arc<Inner>,
}

/// What a [`Pool`] shares between its clones.
struct Inner {
    /// Timeouts for connecting and calling.
    cfg: NetConfig,
    /// This side's static key and the network secret, for every link.
    keys: LinkKeys,
    /// Most connections kept at once; beyond it the least recently used go.
    capacity: usize,
    /// The cached connections. A std mutex: held only to read or update the
    /// map, never across an `.await`.
    conns: Mutex<HashMap<String, Cached>>,
}

/// One cached connection.
struct Cached {
    /// The connection, shared with the calls using it.
    conn: Arc<Connection>,
    /// When a call last took it, to evict the least recently used.
    last_used: Instant,
}

impl Pool {
    /// An empty pool keeping up to [`DEFAULT_POOL_CAPACITY`] connections,
    /// opening links with `keys`.
    pub fn new(cfg: NetConfig, keys: LinkKeys) -> Pool {
        Pool::with_capacity(cfg, keys, DEFAULT_POOL_CAPACITY)
    }

    /// An empty pool keeping up to `capacity` connections (at least one).
    pub fn with_capacity(cfg: NetConfig, keys: LinkKeys, capacity: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                cfg,
                keys,
                capacity: capacity.max(1),
                conns: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The pool's timeouts.
    pub fn config(&self) -> &NetConfig {
        &self.inner.cfg
    }

    /// Calls `addr` with the configured `rpc_timeout`. An error answer is
    /// `Ok(Response::Error(_))`; see [`into_result`](super::into_result).
    pub async fn call(&self, addr: &str, req: Request) -> Result<Response, NetError> {
        self.call_with_timeout(addr, req, self.inner.cfg.rpc_timeout)
            .await
    }

    /// Calls ring member `peer`: the node at its address must prove the key
    /// its ID is the hash of, or the call fails with
    /// [`NetError::WrongPeer`] and nothing is sent.
    pub async fn call_peer(&self, peer: &Peer, req: Request) -> Result<Response, NetError> {
        let kind = req.kind();
        let result = match self.connection_to(&peer.addr, Some(peer.id)).await {
            Ok(conn) => {
                self.call_on(&peer.addr, conn, req, self.inner.cfg.rpc_timeout)
                    .await
            }
            Err(e) => Err(e),
        };
        count_sent(kind, &result);
        result
    }

    /// Calls `addr`, waiting at most `timeout` for the answer (connecting,
    /// if needed, is bounded by `connect_timeout` on top).
    pub async fn call_with_timeout(
        &self,
        addr: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        let kind = req.kind();
        let result = match self.connection(addr).await {
            Ok(conn) => self.call_on(addr, conn, req, timeout).await,
            Err(e) => Err(e),
        };
        count_sent(kind, &result);
        result
    }

    /// The static public key the node at `addr` proved (connecting if
    /// needed).
    pub async fn remote_key(&self, addr: &str) -> Result<[u8; 32], NetError> {
        let conn = self.connection(addr).await?;
        conn.remote_key()
            .ok_or_else(|| NetError::Handshake(format!("{addr}: link is not secured")))
    }

    async fn call_on(
        &self,
        addr: &str,
        conn: Arc<Connection>,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        let result = conn.call(req, timeout).await;
        if result == Err(NetError::Closed) {
            self.forget_conn(addr, &conn);
        }
        result
    }

    /// Drops the cached connection to `addr`, if any; the next call
    /// reconnects.
    pub fn forget(&self, addr: &str) {
        self.lock().remove(addr);
    }

    /// Number of cached connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        // The map stays valid whatever a panicking holder was doing, so a
        // poisoned lock is still usable.
        self.inner
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the cached connection to `addr` if it is still `conn`.
    fn forget_conn(&self, addr: &str, conn: &Arc<Connection>) {
        let mut conns = self.lock();
        if conns.get(addr).is_some_and(|c| Arc::ptr_eq(&c.conn, conn)) {
            conns.remove(addr);
        }
    }

    /// The open cached connection to `addr`, or a new one.
    async fn connection(&self, addr: &str) -> Result<Arc<Connection>, NetError> {
        self.connection_to(addr, None).await
    }

    /// The open connection to `addr`, whose peer must be `expect` if given.
    async fn connection_to(
        &self,
        addr: &str,
        expect: Option<Id>,
    ) -> Result<Arc<Connection>, NetError> {
        if let Some(conn) = self.cached(addr) {
            return match (expect, conn.remote_id()) {
                (Some(expected), Some(found)) if expected != found => Err(NetError::WrongPeer {
                    addr: addr.to_string(),
                    expected,
                    found,
                }),
                _ => Ok(conn),
            };
        }
        let fresh = Arc::new(self.connect(addr, expect).await?);
        let mut conns = self.lock();
        let now = Instant::now();
        if let Some(c) = conns.get_mut(addr)
            && !c.conn.is_closed()
        {
            // Another caller connected first: use theirs, drop ours.
            c.last_used = now;
            return Ok(c.conn.clone());
        }
        conns.insert(
            addr.to_string(),
            Cached {
                conn: fresh.clone(),
                last_used: now,
            },
        );
        if conns.len() > self.inner.capacity {
            evict(&mut conns, self.inner.capacity, addr);
        }
        Ok(fresh)
    }

    /// The cached connection to `addr` if it is still open.
    fn cached(&self, addr: &str) -> Option<Arc<Connection>> {
        let mut conns = self.lock();
        let c = conns.get_mut(addr)?;
        if c.conn.is_closed() {
            conns.remove(addr);
            return None;
        }
        c.last_used = Instant::now();
        Some(c.conn.clone())
    }

    /// Opens a TCP connection to `addr` and runs the link handshake, each
    /// within `connect_timeout`.
    async fn connect(&self, addr: &str, expect: Option<Id>) -> Result<Connection, NetError> {
        let limit = self.inner.cfg.connect_timeout;
        let stream = tokio::time::timeout(limit, self.open_tcp(addr))
            .await
            .map_err(|_| NetError::Connect(format!("{addr}: timed out after {limit:?}")))?
            .map_err(|e| NetError::Connect(format!("{addr}: {e}")))?;
        stream.set_nodelay(true)?;
        match initiate(stream, &self.inner.keys, expect, limit).await {
            Ok(secured) => Ok(Connection::secured(secured, addr)),
            Err(HandshakeError::WrongPeer { expected, found }) => Err(NetError::WrongPeer {
                addr: addr.to_string(),
                expected,
                found,
            }),
            Err(e) => Err(NetError::Handshake(format!("{addr}: {e}"))),
        }
    }

    /// A TCP stream to `addr`, from `local_ip` if set.
    async fn open_tcp(&self, addr: &str) -> std::io::Result<TcpStream> {
        let Some(ip) = self.inner.cfg.local_ip else {
            return TcpStream::connect(addr).await;
        };
        let target: SocketAddr = match tokio::net::lookup_host(addr).await?.next() {
            Some(a) => a,
            None => return Err(std::io::Error::other("address resolves to nothing")),
        };
        let socket = match target {
            SocketAddr::V4(_) if ip.is_ipv4() => TcpSocket::new_v4()?,
            SocketAddr::V6(_) if ip.is_ipv6() => TcpSocket::new_v6()?,
            // Another family than our own address: let the kernel choose.
            _ => return TcpStream::connect(target).await,
        };
        socket.bind(SocketAddr::new(ip, 0))?;
        socket.connect(target).await
    }
}

/// Shrinks `conns` to `capacity`: closed connections first, then the least
/// recently used, never `keep` (the one just added).
fn evict(conns: &mut HashMap<String, Cached>, capacity: usize, keep: &str) {
    conns.retain(|addr, c| addr == keep || !c.conn.is_closed());
    while conns.len() > capacity {
        let oldest = conns
            .iter()
            .filter(|(addr, _)| addr.as_str() != keep)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(addr, _)| addr.clone());
        match oldest {
            Some(addr) => conns.remove(&addr),
            None => break,
        };
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("cfg", &self.inner.cfg)
            .field("connections", &self.len())
            .finish()
    }
}

/// Counts a request of `kind` sent, by how it ended.
fn count_sent(kind: (&'static str, &'static str), result: &Result<Response, NetError>) {
    let outcome = match result {
        Ok(Response::Error(_)) | Err(NetError::Remote(_)) => "refused",
        Ok(_) => "ok",
        Err(NetError::Timeout) => "timeout",
        Err(_) => "failed",
    };
    crate::metrics::get().sent(kind, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::server::tests::{ping, start, test_keys};
    use crate::net::{ServerConfig, into_result};
    use crate::wire::{ChordResponse, RemoteError};

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn pool_reuses_and_reconnects() {
        let test = async {
            let server = start(ServerConfig::default(), Duration::ZERO).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            for _ in 0..3 {
                let r = pool.call(&server.addr, ping()).await.unwrap();
                assert_eq!(r, Response::Chord(ChordResponse::Pong));
            }
            assert_eq!(pool.len(), 1);
            let first = pool.connection(&server.addr).await.unwrap();
            pool.forget(&server.addr);
            assert!(pool.is_empty());
            pool.call(&server.addr, ping()).await.unwrap();
            let second = pool.connection(&server.addr).await.unwrap();
            assert!(!Arc::ptr_eq(&first, &second));
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn pool_is_bounded() {
        let test = async {
            let pool = Pool::with_capacity(NetConfig::default(), test_keys(), 2);
            let mut servers = Vec::new();
            for _ in 0..3 {
                let server = start(ServerConfig::default(), Duration::ZERO).await;
                pool.call(&server.addr, ping()).await.unwrap();
                servers.push(server);
            }
            assert_eq!(pool.len(), 2);
            // The least recently used (the first) was evicted.
            assert!(pool.cached(&servers[0].addr).is_none());
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_address_is_a_connect_error() {
        let test = async {
            // Bind then drop a listener, so the port is (very likely) closed.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            drop(l);
            let pool = Pool::new(NetConfig::default(), test_keys());
            let r = pool.call(&addr, ping()).await;
            assert!(matches!(r, Err(NetError::Connect(_))), "{r:?}");
            assert!(pool.is_empty());
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[test]
    fn error_answers_become_errors() {
        let r = into_result(Response::Error(RemoteError::NotFound));
        assert_eq!(r, Err(NetError::Remote(RemoteError::NotFound)));
    }
}

//! The accept loop and one task per connection, with every resource bounded.
//!
//! Each connection's task first runs the link handshake (see
//! [`handshake`](super::handshake)) within `handshake_timeout`; a peer
//! without the network secret, or one sending plaintext, is logged and cut
//! off before any frame is read. Then it reads request frames and, for each, either answers
//! `Busy` at once or spawns a task that waits for a worker, runs the
//! [`Handler`], and queues the answer on the connection's writer.
//!
//! Bounds, and what happens past them (the first two apply before any
//! handshake work):
//! - `max_conns` open connections: a new socket is closed at once.
//! - `max_conns_per_ip` open connections from one IP address: likewise.
//! - `handshake_timeout` to finish the handshake: the socket is closed.
//! - `max_inflight_per_conn` requests in flight on one connection: `Busy`.
//! - `workers + queue` requests admitted server-wide (running or waiting
//!   for one of `workers` worker permits): `Busy`.
//!
//! So a flood costs at most a bounded number of tasks and buffers and gets a
//! clear `Busy` answer, never an unbounded backlog. A connection that breaks
//! the protocol (bad size, version or body, a truncated or stalled frame, or
//! a `Response` frame sent to the server) is closed with one warning naming
//! the peer and the reason; other connections are unaffected.

use super::LinkKeys;
use super::frames::{ReadError, encode_frame, read_frame, write_frames};
use super::handshake::respond;
use crate::id::Id;
use crate::wire::{Frame, FrameError, RemoteError, Request, Response};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// Who sent a request: the socket address and the ID its link proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The remote socket address.
    pub addr: SocketAddr,
    /// The ring ID of the static key proven by the handshake; a peer
    /// claiming another ID lies.
    pub id: Id,
}

/// Answers requests; one call per request, possibly many at once.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `req`, sent by `caller`.
    fn handle(&self, caller: Caller, req: Request) -> impl Future<Output = Response> + Send;
}

/// Server-side limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Handlers running at once (0 is taken as 1).
    pub workers: usize,
    /// Admitted requests that may wait for a worker; past it, `Busy`.
    pub queue: usize,
    /// Open connections; past it, new sockets are closed.
    pub max_conns: usize,
    /// Open connections from one IP address; past it, new sockets from it
    /// are closed.
    pub max_conns_per_ip: usize,
    /// Time a new connection has to finish the link handshake.
    pub handshake_timeout: Duration,
    /// Requests in flight on one connection; past it, `Busy`.
    pub max_inflight_per_conn: usize,
    /// Time for a started frame to arrive whole, and for a stalled peer to
    /// accept the bytes of an answer.
    pub frame_timeout: Duration,
    /// Time a connection may go without starting a frame before it is closed
    /// (answers still being computed do not count as activity).
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 64,
            queue: 256,
            max_conns: 1024,
            max_conns_per_ip: 64,
            handshake_timeout: Duration::from_secs(5),
            max_inflight_per_conn: 128,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What every connection task of one server shares.
struct Ctx<H> {
    /// Answers the requests.
    handler: Arc<H>,
    /// The limits.
    cfg: ServerConfig,
    /// Requests admitted server-wide (running or queued); bounds the number
    /// of handler tasks.
    admission: Arc<Semaphore>,
    /// Handlers running at once.
    workers: Arc<Semaphore>,
    /// This node's static key and the network secret.
    keys: LinkKeys,
}

/// Open connections per remote IP address.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip` if it has fewer than `max` connections.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = c.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut c = self
            .per_ip
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Serves `listener` until `shutdown` becomes true: stops accepting and
/// returns, and each connection closes at its next frame boundary (handlers
/// already running may finish). If every sender of `shutdown` is dropped
/// without sending true, the server runs until the runtime stops.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    cfg: ServerConfig,
    keys: LinkKeys,
    mut shutdown: watch::Receiver<bool>,
) {
    let workers = cfg.workers.max(1);
    let ctx = Arc::new(Ctx {
        handler,
        admission: Arc::new(Semaphore::new(workers.saturating_add(cfg.queue))),
        workers: Arc::new(Semaphore::new(workers)),
        cfg,
        keys,
    });
    let conns = Arc::new(Semaphore::new(ctx.cfg.max_conns));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let accepted = tokio::select! {
            _ = signalled(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off, then retry.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            log::warn!(
                "refusing connection from {peer}: {} connections already open",
                ctx.cfg.max_conns
            );
            continue;
        };
        let Some(slot) = per_ip.take(peer.ip(), ctx.cfg.max_conns_per_ip) else {
            log::warn!(
                "refusing connection from {peer}: {} connections from {} already open",
                ctx.cfg.max_conns_per_ip,
                peer.ip()
            );
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("connection from {peer}: set_nodelay failed: {e}");
        }
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_conn(stream, peer, ctx, shutdown).await;
            drop(slot);
            drop(permit);
        });
    }
    log::info!("server stopped accepting connections");
}

/// Resolves once `shutdown` is true; never if its senders are all gone.
async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How a connection's read loop ended.
enum End {
    /// The peer closed its side between frames: answers still in flight are
    /// delivered.
    Eof,
    /// Shut down, idle, or broken: the socket is closed at once.
    Abort,
}

/// Reads and dispatches the requests of one connection until it ends.
async fn serve_conn<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx<H>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &ctx.cfg;
    let secured = tokio::select! {
        _ = signalled(&mut shutdown) => return,
        r = respond(stream, &ctx.keys, cfg.handshake_timeout) => r,
    };
    let secured = match secured {
        Ok(s) => s,
        Err(e) => {
            log::warn!("refusing connection from {peer}: {e}");
            return;
        }
    };
    let caller = Caller {
        addr: peer,
        id: secured.remote_id,
    };
    let (read_half, write_half) = tokio::io::split(secured.stream);
    let mut reader = BufReader::new(read_half);
    // Room for every in-flight answer plus one `Busy`, so handlers rarely
    // wait on the writer.
    let (tx, rx) = mpsc::channel(cfg.max_inflight_per_conn.saturating_add(1));
    let stall = cfg.frame_timeout;
    let writer = tokio::spawn(async move {
        if let Err(e) = write_frames(write_half, rx, stall).await {
            log::warn!("closing connection from {peer}: {e}");
        }
    });
    let inflight = Arc::new(Semaphore::new(cfg.max_inflight_per_conn));
    let end = loop {
        if tx.is_closed() {
            // The writer failed (and said why); nobody would get answers.
            break End::Abort;
        }
        let read = read_frame(&mut reader, Some(cfg.idle_timeout), Some(cfg.frame_timeout));
        let frame = tokio::select! {
            _ = signalled(&mut shutdown) => break End::Abort,
            frame = read => frame,
        };
        let (id, req) = match frame {
            Ok(Some(Frame::Request { id, body })) => (id, body),
            Ok(Some(Frame::Response { id, .. })) => {
                log::warn!(
                    "closing connection from {peer}: it sent a response (id {id}) to a server"
                );
                break End::Abort;
            }
            Ok(None) => break End::Eof,
            Err(ReadError::Idle(d)) => {
                log::debug!("closing connection from {peer}: idle for {d:?}");
                break End::Abort;
            }
            Err(e) => {
                log::warn!("closing connection from {peer}: {e}");
                break End::Abort;
            }
        };
        match admit(&inflight, &ctx.admission) {
            Some(permits) => {
                tokio::spawn(run_handler(
                    ctx.clone(),
                    caller,
                    id,
                    req,
                    permits,
                    tx.clone(),
                ));
            }
            None => {
                log::debug!("connection from {peer}: busy, refusing request {id}");
                if !queue_answer(&tx, id, Response::Error(RemoteError::Busy), stall).await {
                    log::warn!("closing connection from {peer}: it does not read its answers");
                    break End::Abort;
                }
            }
        }
    };
    match end {
        // The writer ends, shutting the socket down, once the handlers still
        // running have queued their answers and dropped their senders; the
        // connection keeps its place under `max_conns` until then.
        End::Eof => {
            drop(tx);
            let _ = writer.await;
        }
        // Dropping the writer's half and ours closes the socket now.
        End::Abort => writer.abort(),
    }
}

/// The permits one admitted request holds until its answer is queued.
struct Permits {
    /// Its place among this connection's in-flight requests.
    _conn: OwnedSemaphorePermit,
    /// Its place among the server's admitted requests.
    _server: OwnedSemaphorePermit,
}

/// Admits a request if both its connection and the server have room.
fn admit(inflight: &Arc<Semaphore>, admission: &Arc<Semaphore>) -> Option<Permits> {
    let conn = inflight.clone().try_acquire_owned().ok()?;
    let server = admission.clone().try_acquire_owned().ok()?;
    Some(Permits {
        _conn: conn,
        _server: server,
    })
}

/// Waits for a worker, runs the handler, and queues its answer.
async fn run_handler<H: Handler>(
    ctx: Arc<Ctx<H>>,
    caller: Caller,
    id: u64,
    req: Request,
    permits: Permits,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let resp = {
        // The worker semaphore is never closed, so this only fails if it
        // were; then there is nobody to answer.
        let Ok(_worker) = ctx.workers.acquire().await else {
            return;
        };
        ctx.handler.handle(caller, req).await
    };
    // The worker is released before queuing, so a peer slow to read its
    // answers holds only its own connection's permits, not a worker.
    if !queue_answer(&tx, id, resp, ctx.cfg.frame_timeout).await {
        log::debug!(
            "connection from {}: answer to {id} dropped, connection gone",
            caller.addr
        );
    }
    drop(permits);
}

/// Encodes and queues the answer to request `id`, waiting at most `stall`
/// for room; false if the connection is gone or stuck.
async fn queue_answer(
    tx: &mpsc::Sender<Vec<u8>>,
    id: u64,
    resp: Response,
    stall: Duration,
) -> bool {
    let bytes = match encode_frame(&Frame::Response { id, body: resp }) {
        Ok(bytes) => bytes,
        Err(e) => {
            log::warn!("answer to request {id} cannot be sent: {e}");
            let err = match e {
                FrameError::TooLarge(n) => RemoteError::TooLarge(n as u64),
                other => RemoteError::Unavailable(format!("answer not encodable: {other}")),
            };
            match encode_frame(&Frame::Response {
                id,
                body: Response::Error(err),
            }) {
                Ok(bytes) => bytes,
                Err(_) => return false,
            }
        }
    };
    matches!(
        tokio::time::timeout(stall, tx.send(bytes)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::{NetConfig, NetError, Pool};
    use crate::wire::{ChordRequest, ChordResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    const LIMIT: Duration = Duration::from_secs(10);

    /// Answers `Ping` with `Pong` after `delay`, anything else `Unexpected`.
    struct TestHandler {
        /// How long each request takes.
        delay: Duration,
    }

    impl Handler for TestHandler {
        async fn handle(&self, _caller: Caller, req: Request) -> Response {
            tokio::time::sleep(self.delay).await;
            match req {
                Request::Chord(ChordRequest::Ping) => Response::Chord(ChordResponse::Pong),
                _ => Response::Error(RemoteError::Unexpected),
            }
        }
    }

    /// A server on a free local port, stopped on drop.
    pub(crate) struct TestServer {
        /// Where it listens.
        pub(crate) addr: String,
        /// Its shutdown signal.
        stop: watch::Sender<bool>,
        /// The accept loop.
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            let _ = self.stop.send(true);
        }
    }

    /// The network secret of every test server and pool.
    pub(crate) fn test_secret() -> crate::net::NetworkSecret {
        crate::net::NetworkSecret::from_bytes([7; 32])
    }

    /// A fresh static key in the test network.
    pub(crate) fn test_keys() -> LinkKeys {
        LinkKeys {
            key: crate::net::StaticKey::generate(),
            secret: test_secret(),
        }
    }

    /// Starts a [`TestHandler`] server with `cfg`.
    pub(crate) async fn start(cfg: ServerConfig, delay: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, rx) = watch::channel(false);
        let handler = Arc::new(TestHandler { delay });
        let task = tokio::spawn(serve(listener, handler, cfg, test_keys(), rx));
        TestServer { addr, stop, task }
    }

    /// A secured stream to `addr` on which a test writes raw bytes.
    async fn secure_raw(addr: &str) -> crate::net::SecureStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        crate::net::handshake::initiate(tcp, &test_keys(), None, LIMIT)
            .await
            .unwrap()
            .stream
    }

    pub(crate) fn ping() -> Request {
        Request::Chord(ChordRequest::Ping)
    }

    /// Whether the server closes `s` within a few seconds (reading and
    /// discarding whatever it sends first).
    async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Fires `n` concurrent pings on one pooled connection; counts the
    /// successes and the `Busy` answers.
    async fn burst(pool: &Pool, addr: &str, n: usize) -> (usize, usize) {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let pool = pool.clone();
                let addr = addr.to_string();
                tokio::spawn(async move { pool.call(&addr, ping()).await })
            })
            .collect();
        let (mut ok, mut busy) = (0, 0);
        for call in calls {
            match call.await.unwrap().unwrap() {
                Response::Chord(ChordResponse::Pong) => ok += 1,
                Response::Error(RemoteError::Busy) => busy += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        (ok, busy)
    }

    fn quick() -> ServerConfig {
        ServerConfig {
            frame_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        }
    }

    #[tokio::test]
    async fn pool_call_is_served() {
        let test = async {
            let server = start(ServerConfig::default(), Duration::ZERO).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            let r = pool.call(&server.addr, ping()).await.unwrap();
            assert_eq!(r, Response::Chord(ChordResponse::Pong));
            let r = pool
                .call(&server.addr, Request::Chord(ChordRequest::GetState))
                .await;
            assert_eq!(r, Ok(Response::Error(RemoteError::Unexpected)));
            assert_eq!(
                crate::net::into_result(r.unwrap()),
                Err(NetError::Remote(RemoteError::Unexpected))
            );
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_closes_only_that_connection() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            pool.call(&server.addr, ping()).await.unwrap();
            let bad: [&[u8]; 4] = [
                // Valid length and version, body not a frame.
                &[0, 0, 0, 5, 1, 0xff, 0xff, 0xff, 0xff],
                // Unknown version.
                &[0, 0, 0, 2, 99, 0],
                // Empty frame.
                &[0, 0, 0, 0],
                // Text: its first four bytes claim over a gigabyte.
                b"GET / HTTP/1.1\r\n\r\n",
            ];
            for bytes in bad {
                let mut raw = secure_raw(&server.addr).await;
                raw.write_all(bytes).await.unwrap();
                raw.flush().await.unwrap();
                assert!(closed_by_server(&mut raw).await, "{bytes:?} not closed");
                let r = pool.call(&server.addr, ping()).await.unwrap();
                assert_eq!(r, Response::Chord(ChordResponse::Pong));
            }
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn huge_length_prefix_closes_the_connection() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let mut raw = secure_raw(&server.addr).await;
            raw.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
            raw.flush().await.unwrap();
            assert!(closed_by_server(&mut raw).await);
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn truncated_frame_closes_after_frame_timeout() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let mut raw = secure_raw(&server.addr).await;
            let start = Instant::now();
            raw.write_all(&[0, 0, 0, 100]).await.unwrap();
            raw.write_all(&[1; 10]).await.unwrap();
            raw.flush().await.unwrap();
            assert!(closed_by_server(&mut raw).await);
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(250), "{waited:?}");
            assert!(waited < Duration::from_secs(3), "{waited:?}");
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn response_sent_to_server_closes_the_connection() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let mut raw = secure_raw(&server.addr).await;
            let frame = Frame::Response {
                id: 7,
                body: Response::Chord(ChordResponse::Pong),
            };
            raw.write_all(&encode_frame(&frame).unwrap()).await.unwrap();
            raw.flush().await.unwrap();
            assert!(closed_by_server(&mut raw).await);
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        let test = async {
            let cfg = ServerConfig {
                idle_timeout: Duration::from_millis(200),
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::ZERO).await;
            let mut raw = secure_raw(&server.addr).await;
            assert!(closed_by_server(&mut raw).await);
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn full_server_answers_busy() {
        let test = async {
            let cfg = ServerConfig {
                workers: 1,
                queue: 1,
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::from_millis(300)).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            let (ok, busy) = burst(&pool, &server.addr, 6).await;
            assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
            // Once the burst is over, the server has room again.
            let r = pool.call(&server.addr, ping()).await.unwrap();
            assert_eq!(r, Response::Chord(ChordResponse::Pong));
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn per_connection_cap_answers_busy() {
        let test = async {
            let cfg = ServerConfig {
                max_inflight_per_conn: 2,
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::from_millis(300)).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            let (ok, busy) = burst(&pool, &server.addr, 6).await;
            assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
            assert_eq!(ok + busy, 6);
            // A second connection has its own allowance.
            let other = Pool::new(NetConfig::default(), test_keys());
            let (ok, _) = burst(&other, &server.addr, 2).await;
            assert_eq!(ok, 2);
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed() {
        let test = async {
            let cfg = ServerConfig {
                max_conns: 1,
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::ZERO).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            pool.call(&server.addr, ping()).await.unwrap();
            let mut raw = TcpStream::connect(&server.addr).await.unwrap();
            assert!(closed_by_server(&mut raw).await);
            // The admitted connection is still served.
            pool.call(&server.addr, ping()).await.unwrap();
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let test = async {
            let mut server = start(ServerConfig::default(), Duration::ZERO).await;
            let pool = Pool::new(NetConfig::default(), test_keys());
            pool.call(&server.addr, ping()).await.unwrap();
            server.stop.send(true).unwrap();
            (&mut server.task).await.unwrap();
            // The open connection closes too, failing the next call.
            let r = pool.call(&server.addr, ping()).await;
            assert!(r.is_err(), "{r:?}");
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn plaintext_frames_get_no_answer() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let mut raw = TcpStream::connect(&server.addr).await.unwrap();
            let frame = Frame::Request {
                id: 1,
                body: ping(),
            };
            raw.write_all(&encode_frame(&frame).unwrap()).await.unwrap();
            let mut got = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
            // Closed without a byte of answer.
            assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?} {got:?}");
            assert!(got.is_empty());
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_secret_cannot_call() {
        let test = async {
            let server = start(quick(), Duration::ZERO).await;
            let stranger = LinkKeys {
                key: crate::net::StaticKey::generate(),
                secret: crate::net::NetworkSecret::generate(),
            };
            let pool = Pool::new(NetConfig::default(), stranger);
            let r = pool.call(&server.addr, ping()).await;
            assert!(r.is_err(), "{r:?}");
            // A member still gets served.
            let member = Pool::new(NetConfig::default(), test_keys());
            let r = member.call(&server.addr, ping()).await.unwrap();
            assert_eq!(r, Response::Chord(ChordResponse::Pong));
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn stalled_handshakes_are_cut_and_others_served() {
        let test = async {
            let cfg = ServerConfig {
                handshake_timeout: Duration::from_millis(300),
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::ZERO).await;
            let mut stalled = Vec::new();
            for _ in 0..20 {
                stalled.push(TcpStream::connect(&server.addr).await.unwrap());
            }
            let pool = Pool::new(NetConfig::default(), test_keys());
            let r = pool.call(&server.addr, ping()).await.unwrap();
            assert_eq!(r, Response::Chord(ChordResponse::Pong));
            for s in &mut stalled {
                assert!(closed_by_server(s).await);
            }
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }

    #[tokio::test]
    async fn per_ip_cap_closes_extra_connections() {
        let test = async {
            let cfg = ServerConfig {
                max_conns_per_ip: 2,
                ..ServerConfig::default()
            };
            let server = start(cfg, Duration::ZERO).await;
            let _a = TcpStream::connect(&server.addr).await.unwrap();
            let _b = TcpStream::connect(&server.addr).await.unwrap();
            let mut c = TcpStream::connect(&server.addr).await.unwrap();
            assert!(closed_by_server(&mut c).await);
        };
        tokio::time::timeout(LIMIT, test).await.unwrap();
    }
}

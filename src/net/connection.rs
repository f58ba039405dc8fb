//! The client end of one stream: many calls in flight at once, each matched
//! to its answer by request id.
//!
//! The stream is split between two tasks. The writer drains a bounded queue
//! of encoded request frames; the reader decodes response frames and hands
//! each to the call waiting on its id. Callers only touch the pending-call
//! table and the queue.
//!
//! Invariants: a call's entry is in the table from before its request is
//! queued until it is answered, times out, or is cancelled (a guard removes
//! it), so the table never outgrows the calls in flight. When either task
//! ends, the connection is marked closed and the table is emptied, which
//! fails every pending call with [`NetError::Closed`] at once; no entry is
//! added once it is closed.

use super::NetError;
use super::frames::{encode_frame, read_frame, write_frames};
use super::handshake::Secured;
use crate::wire::{Frame, Request, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// Request frames that may wait for the writer; more make callers wait.
const OUTBOX: usize = 64;
/// A peer that accepts no bytes, or leaves a frame half-sent, for this long
/// is treated as dead.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// A persistent, multiplexed client connection. Dropping it closes the
/// stream.
pub struct Connection {
    /// The pending-call table, shared with the reader and writer tasks.
    shared: Arc<Shared>,
    /// Encoded request frames for the writer task; bounded so a slow peer
    /// pushes back on callers instead of growing memory.
    outbox: mpsc::Sender<Vec<u8>>,
    /// Id for the next request; unique on this connection.
    next_id: AtomicU64,
    /// The reader task, stopped when the connection is dropped.
    reader: AbortHandle,
    /// The writer task, stopped when the connection is dropped.
    writer: AbortHandle,
    /// The peer's static public key, proven by the link handshake.
    remote_key: Option<[u8; 32]>,
}

/// State shared between callers and the two tasks.
struct Shared {
    /// Guarded by a std mutex: it is held only to touch the map or the flag,
    /// never across an `.await`.
    state: Mutex<State>,
    /// Who is on the other end, for logs.
    peer: String,
}

/// The pending-call table and whether the stream is gone.
struct State {
    /// Where to deliver the answer to each request id in flight.
    calls: HashMap<u64, oneshot::Sender<Response>>,
    /// Set once either task has ended; no call is registered after that.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map and the flag
        // inconsistent with each other, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed and fails every pending call.
    fn close(&self) {
        let calls = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.calls)
        };
        // Dropping the senders wakes each waiting call with `Closed`.
        drop(calls);
    }
}

/// Removes a call's entry when the call ends in any way (answer, timeout,
/// or the caller dropping the future).
struct PendingGuard<'a> {
    /// The table holding the entry.
    shared: &'a Shared,
    /// The entry's request id.
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().calls.remove(&self.id);
    }
}

impl Connection {
    /// Starts the reader and writer tasks on `stream` with no link
    /// handshake (for tests of this layer over in-memory pipes; nodes only
    /// accept [`Connection::secured`] links). `peer` names the other end in
    /// logs. Must be called within a tokio runtime.
    #[cfg(test)]
    pub fn new<S>(stream: S, peer: impl Into<String>) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Connection::start(stream, peer.into(), None)
    }

    /// A connection over a finished link handshake; it remembers the key
    /// the peer proved.
    pub fn secured<S>(secured: Secured<S>, peer: impl Into<String>) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Connection::start(secured.stream, peer.into(), Some(secured.remote_key))
    }

    fn start<S>(stream: S, peer: String, remote_key: Option<[u8; 32]>) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                calls: HashMap::new(),
                closed: false,
            }),
            peer,
        });
        let (read_half, write_half) = tokio::io::split(stream);
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let reader = tokio::spawn(read_answers(BufReader::new(read_half), shared.clone()));
        let writer_shared = shared.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = write_frames(write_half, rx, STALL_LIMIT).await {
                log::warn!("connection to {}: write failed: {e}", writer_shared.peer);
            }
            writer_shared.close();
        });
        Connection {
            shared,
            outbox,
            next_id: AtomicU64::new(0),
            reader: reader.abort_handle(),
            writer: writer.abort_handle(),
            remote_key,
        }
    }

    /// Sends `req` and waits for its answer, at most `timeout`. An error
    /// answer is returned as `Ok(Response::Error(_))`.
    pub async fn call(&self, req: Request, timeout: Duration) -> Result<Response, NetError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_frame(&Frame::Request { id, body: req })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(NetError::Closed);
            }
            state.calls.insert(id, tx);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        let exchange = async {
            self.outbox
                .send(bytes)
                .await
                .map_err(|_| NetError::Closed)?;
            rx.await.map_err(|_| NetError::Closed)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NetError::Timeout)?
    }

    /// Whether the stream has died; a closed connection fails every call.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// The static public key the peer proved, if the link is secured.
    pub fn remote_key(&self) -> Option<[u8; 32]> {
        self.remote_key
    }

    /// The ring ID of the peer's proven key.
    pub fn remote_id(&self) -> Option<crate::id::Id> {
        self.remote_key.as_ref().map(super::keys::peer_id)
    }

    /// Calls waiting for an answer.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.shared.lock().calls.len()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.close();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The reader task: delivers each answer to its call until the stream ends
/// or breaks the protocol, then closes the connection.
async fn read_answers<R: AsyncRead + Unpin>(mut r: R, shared: Arc<Shared>) {
    let peer = &shared.peer;
    loop {
        match read_frame(&mut r, None, Some(STALL_LIMIT)).await {
            Ok(Some(Frame::Response { id, body })) => {
                let waiting = shared.lock().calls.remove(&id);
                match waiting {
                    // The caller may have just given up; nothing to do then.
                    Some(tx) => drop(tx.send(body)),
                    None => log::debug!("connection to {peer}: late answer to call {id}"),
                }
            }
            Ok(Some(Frame::Request { .. })) => {
                log::warn!("closing connection to {peer}: it sent a request to a client");
                break;
            }
            Ok(None) => {
                log::debug!("connection to {peer} closed by the peer");
                break;
            }
            Err(e) => {
                log::warn!("closing connection to {peer}: {e}");
                break;
            }
        }
    }
    shared.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::wire::{ReplicaRequest, ReplicaResponse};
    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tokio::time::Instant;

    const LIMIT: Duration = Duration::from_secs(10);

    fn fetch(n: u64) -> Request {
        Request::Replica(ReplicaRequest::FetchBlock {
            key: Id::from_u64(n),
        })
    }

    /// What the echo server answers to `fetch(n)`: the key's bytes.
    fn answer(req: &Request) -> Response {
        match req {
            Request::Replica(ReplicaRequest::FetchBlock { key }) => {
                Response::Replica(ReplicaResponse::Block {
                    data: key.0.to_vec(),
                    claims: Vec::new(),
                })
            }
            _ => Response::Error(crate::wire::RemoteError::Unexpected),
        }
    }

    /// Reads `batch` requests, then answers them in reverse order; repeats
    /// until the stream ends.
    async fn echo_server(mut s: DuplexStream, batch: usize) {
        loop {
            let mut got = Vec::new();
            while got.len() < batch {
                match read_frame(&mut s, None, None).await {
                    Ok(Some(Frame::Request { id, body })) => got.push((id, body)),
                    _ => return,
                }
            }
            for (id, body) in got.into_iter().rev() {
                let f = Frame::Response {
                    id,
                    body: answer(&body),
                };
                if s.write_all(&encode_frame(&f).unwrap()).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn concurrent_calls_get_their_own_answers() {
        let (a, b) = tokio::io::duplex(4096);
        tokio::spawn(echo_server(b, 100));
        let conn = Arc::new(Connection::new(a, "echo"));
        let calls = (0..100u64).map(|n| {
            let conn = conn.clone();
            tokio::spawn(async move { (n, conn.call(fetch(n), LIMIT).await) })
        });
        let all = async {
            for call in calls.collect::<Vec<_>>() {
                let (n, resp) = call.await.unwrap();
                assert_eq!(resp.unwrap(), answer(&fetch(n)));
            }
        };
        tokio::time::timeout(LIMIT, all).await.unwrap();
        assert_eq!(conn.pending(), 0);
        assert!(!conn.is_closed());
    }

    #[tokio::test]
    async fn unanswered_call_times_out_and_leaves_no_entry() {
        let (a, mut b) = tokio::io::duplex(4096);
        // Reads requests, never answers.
        tokio::spawn(
            async move { while let Ok(Some(_)) = read_frame(&mut b, None, None).await {} },
        );
        let conn = Connection::new(a, "mute");
        let start = Instant::now();
        let r = tokio::time::timeout(LIMIT, conn.call(fetch(1), Duration::from_millis(200))).await;
        assert_eq!(r.unwrap(), Err(NetError::Timeout));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(conn.pending(), 0);
        assert!(!conn.is_closed());
    }

    #[tokio::test]
    async fn dead_stream_fails_pending_calls_promptly() {
        let (a, mut b) = tokio::io::duplex(4096);
        // Reads one request, then hangs up.
        tokio::spawn(async move {
            let _ = read_frame(&mut b, None, None).await;
        });
        let conn = Connection::new(a, "dies");
        let start = Instant::now();
        let r = tokio::time::timeout(LIMIT, conn.call(fetch(1), Duration::from_secs(60))).await;
        assert_eq!(r.unwrap(), Err(NetError::Closed));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(conn.is_closed());
        assert_eq!(conn.pending(), 0);
        let again = tokio::time::timeout(LIMIT, conn.call(fetch(2), LIMIT)).await;
        assert_eq!(again.unwrap(), Err(NetError::Closed));
    }

    #[tokio::test]
    async fn request_from_the_server_closes_the_connection() {
        let (a, mut b) = tokio::io::duplex(4096);
        let conn = Connection::new(a, "confused");
        let bogus = encode_frame(&Frame::Request {
            id: 0,
            body: fetch(0),
        })
        .unwrap();
        b.write_all(&bogus).await.unwrap();
        let r = tokio::time::timeout(LIMIT, conn.call(fetch(1), LIMIT)).await;
        assert_eq!(r.unwrap(), Err(NetError::Closed));
        assert!(conn.is_closed());
    }
}

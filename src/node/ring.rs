//! Drives the `chord` state machine over the network.
//!
//! [`Ring`] owns the [`ChordNode`] behind a mutex (never held across an
//! await), sends the calls it asks for through the connection pool — each in
//! its own task with the pool's timeout — and feeds the replies back. Lookups
//! are awaited through one-shot channels. Timer ticks (stabilize,
//! fix_fingers, check_predecessor, merge probes) come from
//! [`Ring::run_timers`].

use crate::chord::{ChordNode, Event, Failure};
use crate::dht::RouteCache;
use crate::net::{NetError, Pool};
use crate::wire::{ChordRequest, ChordResponse, Peer, RemoteError, Request, Response};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Periods of the ring maintenance timers.
#[derive(Debug, Clone)]
pub struct Timers {
    pub stabilize: Duration,
    pub fix_fingers: Duration,
    pub check_pred: Duration,
    /// Merge probes ([`ChordNode::probe_merge`]).
    pub merge_probe: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            stabilize: Duration::from_millis(500),
            fix_fingers: Duration::from_millis(250),
            check_pred: Duration::from_millis(1000),
            merge_probe: Duration::from_secs(5),
        }
    }
}

/// A join that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("could not join the ring through {addr} after {tries} attempts")]
pub struct JoinError {
    /// The contact tried.
    pub addr: String,
    /// How many times.
    pub tries: u32,
}

/// The ring state of this node and the machinery that drives it.
pub struct Ring {
    /// The protocol state machine. Locked only for non-blocking steps.
    chord: Mutex<ChordNode>,
    /// Connections to peers.
    pool: Pool,
    /// The node's one cache of lookup answers; cleared whenever this
    /// node's own neighbours change.
    pub routes: RouteCache,
    /// Wakes whoever waits for membership changes (repair).
    pub topology: Notify,
    /// Join progress: `Some(true)` joined, `Some(false)` failed.
    join_state: watch::Sender<Option<bool>>,
    /// Set when the graceful leave has told both neighbours.
    leave_done: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every step is
    // applied whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ring {
    /// A ring driver for `chord`, calling peers through `pool`.
    pub fn new(chord: ChordNode, pool: Pool) -> Arc<Ring> {
        Arc::new(Ring {
            chord: Mutex::new(chord),
            pool,
            routes: RouteCache::default(),
            topology: Notify::new(),
            join_state: watch::channel(None).0,
            leave_done: Notify::new(),
        })
    }

    /// Runs `f` on the state machine, then sends what it asked for.
    pub fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut ChordNode) -> R) -> R {
        let r = f(&mut lock(&self.chord));
        self.pump();
        r
    }

    /// Reads the state machine without changing it.
    pub fn view<R>(&self, f: impl FnOnce(&ChordNode) -> R) -> R {
        f(&lock(&self.chord))
    }

    /// This node.
    pub fn me(&self) -> Peer {
        self.view(|c| c.me().clone())
    }

    /// Answers a chord request from a peer.
    pub fn handle_request(self: &Arc<Self>, req: ChordRequest) -> ChordResponse {
        self.with(|c| c.handle_request(req))
    }

    /// Sends queued calls and dispatches queued events.
    fn pump(self: &Arc<Self>) {
        let (outs, events) = {
            let mut c = lock(&self.chord);
            let mut outs = Vec::new();
            while let Some(o) = c.poll_outgoing() {
                outs.push(o);
            }
            let mut events = Vec::new();
            while let Some(e) = c.poll_event() {
                events.push(e);
            }
            (outs, events)
        };
        for out in outs {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                // Every peer must prove the key behind its ID.
                let call = me.pool.call_peer(&out.to, Request::Chord(out.req)).await;
                if let Err(e @ NetError::WrongPeer { .. }) = &call {
                    log::warn!("{e}: treating it as unreachable");
                }
                let reply = match call {
                    Ok(Response::Chord(r)) => Ok(r),
                    Ok(Response::Error(RemoteError::Busy)) => Ok(ChordResponse::Busy),
                    Ok(_) => Err(Failure::Protocol),
                    Err(NetError::Timeout) => Err(Failure::Timeout),
                    Err(_) => Err(Failure::Unreachable),
                };
                me.with(|c| c.handle_reply(out.token, reply));
            });
        }
        for ev in events {
            match ev {
                // Lookups of the node's own users run in the DHT's request
                // machines; the state machine's are only its own.
                Event::LookupDone { .. } => {}
                Event::Joined => {
                    self.join_state.send_replace(Some(true));
                    self.routes.clear();
                    self.topology.notify_one();
                }
                Event::JoinFailed => {
                    self.join_state.send_replace(Some(false));
                }
                Event::Topology => {
                    self.routes.clear();
                    self.topology.notify_one();
                }
                Event::LeaveDone => self.leave_done.notify_one(),
            }
        }
    }

    /// Joins through `addr`, retrying with backoff; `Err` after `tries`.
    pub async fn join(self: &Arc<Self>, addr: &str, tries: u32) -> Result<(), JoinError> {
        let mut rx = self.join_state.subscribe();
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(4))).await;
            }
            self.join_state.send_replace(None);
            // The contact is known by address: its link proves its key,
            // and its ID is the hash of that key.
            let via = match self.pool.remote_key(addr).await {
                Ok(key) => Peer {
                    id: crate::net::peer_id(&key),
                    addr: addr.to_string(),
                },
                Err(e) => {
                    log::warn!(
                        "join through {addr}: {e} (attempt {} of {tries})",
                        attempt + 1
                    );
                    continue;
                }
            };
            self.with(|c| c.join(via));
            let outcome = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    if let Some(v) = *rx.borrow_and_update() {
                        return v;
                    }
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            match outcome {
                Ok(true) => return Ok(()),
                _ => log::warn!(
                    "join through {addr} failed (attempt {} of {tries})",
                    attempt + 1
                ),
            }
        }
        Err(JoinError {
            addr: addr.to_string(),
            tries,
        })
    }

    /// Runs stabilize, fix_fingers and check_predecessor on their periods
    /// until `stop` turns true.
    pub async fn run_timers(self: Arc<Self>, t: Timers, mut stop: watch::Receiver<bool>) {
        let mut s = tokio::time::interval(t.stabilize);
        let mut f = tokio::time::interval(t.fix_fingers);
        let mut c = tokio::time::interval(t.check_pred);
        let mut m = tokio::time::interval(t.merge_probe);
        loop {
            tokio::select! {
                _ = s.tick() => self.with(|n| n.stabilize()),
                _ = f.tick() => self.with(|n| n.fix_fingers()),
                _ = c.tick() => self.with(|n| n.check_predecessor()),
                _ = m.tick() => self.with(|n| n.probe_merge()),
                _ = stop.changed() => {
                    if *stop.borrow() { return; }
                }
            }
        }
    }

    /// Leaves gracefully; returns once both neighbours answered or after
    /// `deadline`.
    pub async fn leave(self: &Arc<Self>, deadline: Duration) {
        let done = self.leave_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        self.with(|c| c.leave());
        let _ = tokio::time::timeout(deadline, done).await;
    }
}

//! `peerstore node --http ADDR`: the node's web endpoint, read-only.
//!
//! - `/metrics`: every metric in the Prometheus text format
//!   ([`crate::metrics`]);
//! - `/api/status`: the dashboard's content as JSON ([`status::Status`]);
//! - `/`: the dashboard page ([`page`]): the ring as a picture, each
//!   member's counts and state, whether the data is safe, this node's
//!   uploads, cache and repair, the mount's conflicts, the account's
//!   shares.
//!
//! Nothing here changes anything, so nothing asks for a session; the
//! address must be a loopback one unless `--http-allow-remote` is given
//! (then anyone who reaches it reads the ring's layout and this node's
//! counts, never a file name or content). The survey of the ring
//! ([`survey`]) runs only while the endpoint is on. At most
//! [`MAX_CONCURRENT`] requests are served at once, each within
//! [`REQUEST_TIMEOUT`].

pub mod page;
pub mod status;
pub mod survey;

use crate::node::Node;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use status::{Shares, Status};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use survey::Survey;
use tokio::sync::watch;

/// Requests served at once, at most.
pub const MAX_CONCURRENT: usize = 16;
/// Time a request has to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the account's shares, read from the ring, are reused.
const SHARES_FOR: Duration = Duration::from_secs(10);

/// Reads the account's shares (set when the node mounts an account).
pub type SharesHook = Arc<dyn Fn() -> BoxFuture<'static, Result<Shares, String>> + Send + Sync>;

/// Where and to whom the endpoint listens.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: String,
    /// Listen on a non-loopback address too.
    pub allow_remote: bool,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {0}: {1}")]
    Address(String, String),
    #[error(
        "--http {0} is not a loopback address: the dashboard shows the ring to whoever reaches it; add --http-allow-remote to allow that"
    )]
    NotLoopback(String),
    #[error("--http {0}: cannot listen: {1}")]
    Listen(String, std::io::Error),
}

/// The endpoint's state.
struct Dashboard {
    node: Arc<Node>,
    survey: Arc<Survey>,
    shares: Option<SharesHook>,
    shares_seen: Mutex<Option<(Instant, Shares)>>,
}

impl Dashboard {
    /// The dashboard's content now.
    async fn status(&self) -> Status {
        let now = Instant::now();
        let node_status = self.node.status().await;
        let info = &node_status.info;
        let seen = self.survey.members();
        Status {
            id: info.me.id.to_hex(),
            addr: info.me.addr.clone(),
            member: node_status.member,
            range: info
                .pred
                .as_ref()
                .map(|p| p.id)
                .or_else(|| {
                    // Alone in its ring: every key is its own.
                    let alone = info.succs.iter().all(|s| s.id == info.me.id);
                    (node_status.member && alone).then_some(info.me.id)
                })
                .map(|from| (from.to_hex(), info.me.id.to_hex())),
            replicas: info.replicas,
            members: status::members(&seen, info.me.id, now),
            safety: status::safety(&seen, info.replicas, now),
            levels: levels_of(&self.node, &node_status),
            mount: node_status.mount,
            shares: self.shares().await,
        }
    }

    /// The account's shares, read at most every [`SHARES_FOR`].
    async fn shares(&self) -> Option<Shares> {
        let hook = self.shares.as_ref()?;
        if let Some((at, s)) = &*self.shares_seen.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < SHARES_FOR
        {
            return Some(s.clone());
        }
        match hook().await {
            Ok(s) => {
                *self.shares_seen.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), s.clone()));
                Some(s)
            }
            Err(e) => {
                log::debug!("dashboard: the account's shares could not be read: {e}");
                self.shares_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|(_, s)| s.clone())
            }
        }
    }
}

/// The address `addr` resolves to, checked: loopback unless
/// `allow_remote`.
async fn resolve(cfg: &HttpConfig) -> Result<SocketAddr, HttpError> {
    let mut addrs = tokio::net::lookup_host(&cfg.addr)
        .await
        .map_err(|e| HttpError::Address(cfg.addr.clone(), e.to_string()))?;
    let addr = addrs
        .next()
        .ok_or_else(|| HttpError::Address(cfg.addr.clone(), "resolves to nothing".into()))?;
    if !cfg.allow_remote && !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback(cfg.addr.clone()));
    }
    Ok(addr)
}

/// Starts the endpoint and the ring survey; they stop when `stop` turns
/// `true`. Returns the address bound.
pub async fn start(
    cfg: HttpConfig,
    node: Arc<Node>,
    shares: Option<SharesHook>,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, HttpError> {
    let addr = resolve(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HttpError::Listen(cfg.addr.clone(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| HttpError::Listen(cfg.addr.clone(), e))?;
    let survey = Arc::new(Survey::default());
    tokio::spawn(Arc::clone(&survey).run(Arc::clone(&node), stop.clone()));
    let state = Arc::new(Dashboard {
        node,
        survey,
        shares,
        shares_seen: Mutex::new(None),
    });
    let app = axum::Router::new()
        .route("/", get(page_route))
        .route("/api/status", get(status_route))
        .route("/metrics", get(metrics_route))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(state);
    let mut stop = stop;
    tokio::spawn(async move {
        let ended = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(ended)
            .await
        {
            log::warn!("dashboard endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

/// The node's levels, with the open conflicts its mount reported.
fn levels_of(node: &Node, status: &crate::wire::NodeStatus) -> crate::metrics::Levels {
    let conflicts = status.mount.as_ref();
    node.levels(conflicts.map_or(0, |m| m.open_conflicts().count() as u64))
}

type Shared = State<Arc<Dashboard>>;

/// Runs `f` within [`REQUEST_TIMEOUT`] (503 past it).
async fn bounded<F: std::future::Future<Output = Response>>(f: F) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response(),
    }
}

async fn page_route(State(d): Shared) -> Response {
    bounded(async move {
        let s = d.status().await;
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page::render(&s),
        )
            .into_response()
    })
    .await
}

async fn status_route(State(d): Shared) -> Response {
    bounded(async move {
        let s = d.status().await;
        match serde_json::to_string_pretty(&s) {
            Ok(json) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                json,
            )
                .into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    })
    .await
}

async fn metrics_route(State(d): Shared) -> Response {
    bounded(async move {
        let node_status = d.node.status().await;
        let text = crate::metrics::render(&levels_of(&d.node, &node_status));
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_addresses_unless_allowed() {
        let cfg = |addr: &str, allow_remote| HttpConfig {
            addr: addr.into(),
            allow_remote,
        };
        assert!(resolve(&cfg("127.0.0.1:0", false)).await.is_ok());
        assert!(resolve(&cfg("[::1]:0", false)).await.is_ok());
        let e = resolve(&cfg("0.0.0.0:8080", false)).await.unwrap_err();
        assert!(e.to_string().contains("--http-allow-remote"), "{e}");
        assert!(resolve(&cfg("0.0.0.0:8080", true)).await.is_ok());
        let e = resolve(&cfg("no port", false)).await.unwrap_err();
        assert!(e.to_string().starts_with("--http no port:"), "{e}");
    }
}

//! Connections, multiplexed calls with timeouts, and the bounded server.
//!
//! This layer moves [`Frame`](crate::wire::Frame)s and does not know what the messages mean:
//! the only message it ever writes on its own is
//! `Response::Error(RemoteError::Busy)`, when the server is at capacity.
//!
//! - [`handshake`], [`secure`], [`keys`]: every link starts with a Noise
//!   handshake proving both static keys and the network secret; after it,
//!   every byte is encrypted and authenticated. A peer's ID is the hash of
//!   its static key.
//! - [`frames`]: socket ↔ frame (length-checked reads, a batching writer).
//! - [`Connection`]: the client end of one stream; many calls in flight at
//!   once, each matched to its answer by request id.
//! - [`Pool`]: one persistent [`Connection`] per address, reconnecting when
//!   the cached one has died.
//! - [`serve`]: the accept loop; bounded connections, bounded in-flight
//!   requests per connection, bounded handler concurrency and queue.
//!
//! Invariants: every queue is bounded; every call has a timeout; a frame's
//! claimed length is checked against [`MAX_FRAME`](crate::wire::MAX_FRAME) before any buffer is
//! sized for it; a connection that breaks the protocol is closed on its own,
//! never taking the listener or other connections with it.

mod connection;
mod frames;
pub mod handshake;
pub mod keys;
mod pool;
mod secure;
mod server;

pub use connection::Connection;
pub use handshake::HandshakeError;
pub use keys::{LinkKeys, NetworkSecret, StaticKey, fingerprint, peer_id};
pub use pool::{NetConfig, Pool};
pub use secure::SecureStream;
pub use server::{Caller, Handler, ServerConfig, serve};

use crate::wire::{FrameError, RemoteError, Response};

/// Why a call did not produce a [`Response`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// No answer arrived within the call's timeout.
    #[error("call timed out")]
    Timeout,
    /// The TCP connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection died before the answer arrived.
    #[error("connection closed")]
    Closed,
    /// The request could not be framed (for instance, it is too large).
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The peer answered with an error (see [`into_result`]).
    #[error("remote error: {0}")]
    Remote(#[from] RemoteError),
    /// The peer answered with a response of the wrong kind.
    #[error("unexpected response")]
    Unexpected,
    /// The link handshake failed.
    #[error("secure link failed: {0}")]
    Handshake(String),
    /// The node at the address proved another key than the expected ID's.
    #[error("peer at {addr} is node {found}, not {expected}")]
    WrongPeer {
        addr: String,
        expected: crate::id::Id,
        found: crate::id::Id,
    },
}

impl From<std::io::Error> for NetError {
    fn from(e: std::io::Error) -> Self {
        NetError::Io(e.to_string())
    }
}

/// Turns an error answer into an error: `Response::Error(e)` becomes
/// `Err(NetError::Remote(e))`, any other response is passed through.
pub fn into_result(resp: Response) -> Result<Response, NetError> {
    match resp {
        Response::Error(e) => Err(NetError::Remote(e)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ChordResponse;

    #[test]
    fn into_result_maps_error_answers() {
        let ok = Response::Chord(ChordResponse::Pong);
        assert_eq!(into_result(ok.clone()), Ok(ok));
        assert_eq!(
            into_result(Response::Error(RemoteError::Busy)),
            Err(NetError::Remote(RemoteError::Busy))
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(NetError::Timeout.to_string(), "call timed out");
        assert_eq!(
            NetError::Remote(RemoteError::Busy).to_string(),
            "remote error: node busy, retry later"
        );
    }
}

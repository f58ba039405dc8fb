//! The Noise handshake that opens every link, before any request.
//!
//! Pattern `Noise_XXpsk0_25519_AESGCM_SHA256`: both sides prove their
//! static X25519 key (XX), and the network secret is mixed in before the
//! first message (psk0), so a stranger's first message fails to decrypt and
//! is dropped before any Diffie-Hellman work, and a stranger never learns a
//! member's static key. The prologue names the protocol, so a peer speaking
//! another version fails the handshake instead of misreading frames.
//!
//! Handshake messages are framed like transport messages (2-byte length),
//! are at most [`MAX_HANDSHAKE_MESSAGE`] bytes, and the whole exchange must
//! finish within the caller's timeout.

use super::keys::{LinkKeys, peer_id};
use super::secure::SecureStream;
use crate::id::Id;
use snow::{Builder, HandshakeState};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";
/// Bound to every handshake; changes with the wire protocol.
const PROLOGUE: &[u8] = b"peerstore link v1";
/// Longest handshake message accepted (the real ones are under 200 bytes).
pub const MAX_HANDSHAKE_MESSAGE: usize = 512;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error(
        "connection closed during the handshake (does the other side hold another network's secret?)"
    )]
    Closed,
    #[error("i/o error during the handshake: {0}")]
    Io(std::io::Error),
    #[error(
        "first handshake message does not decrypt: the peer does not hold this network's secret (or sent plaintext)"
    )]
    WrongSecret,
    #[error("handshake message of {0} bytes is not a PeerStore handshake")]
    BadLength(usize),
    #[error("handshake failed: {0}")]
    Noise(String),
    #[error("peer proved key {found} but {expected} was expected")]
    WrongPeer { expected: Id, found: Id },
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => HandshakeError::Closed,
            _ => HandshakeError::Io(e),
        }
    }
}

/// A finished handshake: the secured stream and who is on the other end.
pub struct Secured<S> {
    pub stream: SecureStream<S>,
    /// The peer's static public key.
    pub remote_key: [u8; 32],
    /// Its ring ID (hash of the key).
    pub remote_id: Id,
}

fn state(keys: &LinkKeys, initiator: bool) -> Result<HandshakeState, HandshakeError> {
    let params = PATTERN
        .parse()
        .map_err(|e| HandshakeError::Noise(format!("{e}")))?;
    let secret = keys.key.secret_bytes();
    let b = Builder::new(params)
        .local_private_key(&secret)
        .and_then(|b| b.psk(0, keys.secret.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| HandshakeError::Noise(e.to_string()))?;
    let hs = if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    };
    hs.map_err(|e| HandshakeError::Noise(e.to_string()))
}

async fn send<S: AsyncWrite + Unpin>(
    io: &mut S,
    hs: &mut HandshakeState,
) -> Result<(), HandshakeError> {
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|e| HandshakeError::Noise(e.to_string()))?;
    let mut msg = Vec::with_capacity(2 + n);
    msg.extend_from_slice(&(n as u16).to_be_bytes());
    msg.extend_from_slice(&buf[..n]);
    io.write_all(&msg).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one handshake message; `first` marks the responder's first, whose
/// failure to decrypt means a wrong secret.
async fn recv<S: AsyncRead + Unpin>(
    io: &mut S,
    hs: &mut HandshakeState,
    first: bool,
) -> Result<(), HandshakeError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::BadLength(len));
    }
    let mut msg = vec![0u8; len];
    io.read_exact(&mut msg).await?;
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
    hs.read_message(&msg, &mut payload).map_err(|e| {
        if first {
            HandshakeError::WrongSecret
        } else {
            HandshakeError::Noise(format!("{e} (the peer may hold another network's secret)"))
        }
    })?;
    Ok(())
}

fn finish<S>(io: S, hs: HandshakeState) -> Result<Secured<S>, HandshakeError> {
    let remote_key: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| HandshakeError::Noise("peer sent no static key".into()))?;
    let noise = hs
        .into_transport_mode()
        .map_err(|e| HandshakeError::Noise(e.to_string()))?;
    Ok(Secured {
        stream: SecureStream::new(io, noise),
        remote_key,
        remote_id: peer_id(&remote_key),
    })
}

async fn bounded<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
}

/// Opens a link as the connecting side. With `expect`, the peer must prove
/// the key whose hash is that ID.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    keys: &LinkKeys,
    expect: Option<Id>,
    limit: Duration,
) -> Result<Secured<S>, HandshakeError> {
    let mut hs = state(keys, true)?;
    bounded(limit, async {
        send(&mut io, &mut hs).await?;
        recv(&mut io, &mut hs, false).await?;
        send(&mut io, &mut hs).await
    })
    .await?;
    let s = finish(io, hs)?;
    if let Some(expected) = expect
        && expected != s.remote_id
    {
        return Err(HandshakeError::WrongPeer {
            expected,
            found: s.remote_id,
        });
    }
    Ok(s)
}

/// Accepts a link as the listening side.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    keys: &LinkKeys,
    limit: Duration,
) -> Result<Secured<S>, HandshakeError> {
    let mut hs = state(keys, false)?;
    bounded(limit, async {
        recv(&mut io, &mut hs, true).await?;
        send(&mut io, &mut hs).await?;
        recv(&mut io, &mut hs, false).await
    })
    .await?;
    finish(io, hs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::keys::{NetworkSecret, StaticKey};
    use tokio::io::duplex;

    const LIMIT: Duration = Duration::from_secs(5);

    fn keys(secret: &NetworkSecret) -> LinkKeys {
        LinkKeys {
            key: StaticKey::generate(),
            secret: secret.clone(),
        }
    }

    async fn pair(
        a: &LinkKeys,
        b: &LinkKeys,
        expect: Option<Id>,
    ) -> (
        Result<Secured<tokio::io::DuplexStream>, HandshakeError>,
        Result<Secured<tokio::io::DuplexStream>, HandshakeError>,
    ) {
        let (x, y) = duplex(1 << 20);
        tokio::join!(initiate(x, a, expect, LIMIT), respond(y, b, LIMIT))
    }

    #[tokio::test]
    async fn both_sides_learn_each_others_id_and_talk() {
        let s = NetworkSecret::generate();
        let (a, b) = (keys(&s), keys(&s));
        let (x, y) = pair(&a, &b, Some(b.key.id())).await;
        let (mut x, mut y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.remote_id, b.key.id());
        assert_eq!(y.remote_id, a.key.id());
        assert_eq!(x.remote_key, b.key.public());
        // A large write crosses several Noise messages.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let w = tokio::spawn(async move {
            x.stream.write_all(&sent).await.unwrap();
            x.stream.shutdown().await.unwrap();
            x
        });
        let mut got = Vec::new();
        y.stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        w.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_at_the_first_message() {
        let (a, b) = (
            keys(&NetworkSecret::generate()),
            keys(&NetworkSecret::generate()),
        );
        let (x, y) = pair(&a, &b, None).await;
        assert!(
            matches!(y, Err(HandshakeError::WrongSecret)),
            "{:?}",
            y.err()
        );
        assert!(x.is_err());
    }

    #[tokio::test]
    async fn unexpected_key_is_refused() {
        let s = NetworkSecret::generate();
        let (a, b) = (keys(&s), keys(&s));
        let other = StaticKey::generate().id();
        let (x, _) = pair(&a, &b, Some(other)).await;
        assert!(
            matches!(x, Err(HandshakeError::WrongPeer { found, .. }) if found == b.key.id()),
            "{:?}",
            x.err()
        );
    }

    #[tokio::test]
    async fn plaintext_frame_is_not_a_handshake() {
        let s = NetworkSecret::generate();
        let b = keys(&s);
        let (mut x, y) = duplex(4096);
        // A well-formed request frame: u32 length, version 1, body.
        let mut frame = Vec::new();
        crate::wire::encode(
            &crate::wire::Frame::Request {
                id: 1,
                body: crate::wire::Request::Chord(crate::wire::ChordRequest::Ping),
            },
            &mut frame,
        )
        .unwrap();
        x.write_all(&frame).await.unwrap();
        let r = respond(y, &b, LIMIT).await;
        assert!(r.is_err());
        let mut buf = [0u8; 16];
        // Nothing was answered.
        drop(r);
        assert_eq!(x.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn byte_at_a_time_reads_and_cut_messages() {
        let s = NetworkSecret::generate();
        let (a, b) = (keys(&s), keys(&s));
        let (x, y) = pair(&a, &b, None).await;
        let (mut x, mut y) = (x.unwrap(), y.unwrap());
        for chunk in [&b"ab"[..], b"", b"cdef"] {
            x.stream.write_all(chunk).await.unwrap();
        }
        x.stream.flush().await.unwrap();
        let mut got = Vec::new();
        let mut one = [0u8; 1];
        while got.len() < 6 {
            assert_eq!(y.stream.read(&mut one).await.unwrap(), 1);
            got.push(one[0]);
        }
        assert_eq!(got, b"abcdef");
        // A message cut short by the end of the stream is an error, not a
        // clean end.
        let mut inner = x.stream.into_inner();
        inner.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
        inner.shutdown().await.unwrap();
        let err = y.stream.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn stalled_handshake_times_out() {
        let b = keys(&NetworkSecret::generate());
        let (_x, y) = duplex(4096);
        let r = respond(y, &b, Duration::from_millis(100)).await;
        assert!(
            matches!(r, Err(HandshakeError::Timeout(_))),
            "{:?}",
            r.err()
        );
    }

    #[tokio::test]
    async fn tampered_transport_message_fails_the_stream() {
        let s = NetworkSecret::generate();
        let (a, b) = (keys(&s), keys(&s));
        let (x, mut relay_in) = duplex(1 << 16);
        let (mut relay_out, y) = duplex(1 << 16);
        // Copies initiator → responder, flipping one byte after the first
        // 200 (past the handshake's 116), and responder → initiator as is.
        let relay = tokio::spawn(async move {
            let (mut ir, mut iw) = tokio::io::split(&mut relay_in);
            let (mut or, mut ow) = tokio::io::split(&mut relay_out);
            let forward = async {
                let mut seen = 0usize;
                let mut buf = [0u8; 4096];
                loop {
                    let n = ir.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    for (i, byte) in buf[..n].iter_mut().enumerate() {
                        if seen + i == 200 {
                            *byte ^= 1;
                        }
                    }
                    seen += n;
                    if ow.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = ow.shutdown().await;
            };
            let back = async {
                let _ = tokio::io::copy(&mut or, &mut iw).await;
            };
            tokio::join!(forward, back);
        });
        let (x, y) = tokio::join!(initiate(x, &a, None, LIMIT), respond(y, &b, LIMIT));
        let (mut x, mut y) = (x.unwrap(), y.unwrap());
        x.stream.write_all(&[7u8; 1000]).await.unwrap();
        x.stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        let r = y.stream.read_to_end(&mut got).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        drop((x, y));
        relay.abort();
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::net::keys::{NetworkSecret, StaticKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bulk throughput of a secure link against plain TCP on loopback
    /// (`cargo test --release --lib link_speed -- --ignored --nocapture`).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn link_speed() {
        const TOTAL: usize = 512 << 20;
        let s = NetworkSecret::generate();
        let k = |s: &NetworkSecret| LinkKeys {
            key: StaticKey::generate(),
            secret: s.clone(),
        };
        for secure in [false, true] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (ka, kb) = (k(&s), k(&s));
            let server = tokio::spawn(async move {
                let (t, _) = l.accept().await.unwrap();
                let mut got = 0usize;
                let mut buf = vec![0u8; 1 << 20];
                if secure {
                    let mut st = respond(t, &kb, Duration::from_secs(5))
                        .await
                        .unwrap()
                        .stream;
                    loop {
                        let n = st.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                } else {
                    let mut t = t;
                    loop {
                        let n = t.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                }
                got
            });
            let t = tokio::net::TcpStream::connect(addr).await.unwrap();
            let chunk = vec![7u8; 1 << 20];
            let start = std::time::Instant::now();
            if secure {
                let mut st = initiate(t, &ka, None, Duration::from_secs(5))
                    .await
                    .unwrap()
                    .stream;
                for _ in 0..TOTAL / chunk.len() {
                    st.write_all(&chunk).await.unwrap();
                }
                st.shutdown().await.unwrap();
            } else {
                let mut t = t;
                for _ in 0..TOTAL / chunk.len() {
                    t.write_all(&chunk).await.unwrap();
                }
                t.shutdown().await.unwrap();
            }
            assert_eq!(server.await.unwrap(), TOTAL);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "secure={secure}: {:.0} MiB/s",
                TOTAL as f64 / secs / (1 << 20) as f64
            );
        }
    }
}

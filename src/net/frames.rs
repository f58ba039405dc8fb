//! Socket ↔ frame: reading whole frames off a byte stream, and a writer task
//! that drains a bounded queue of encoded frames onto one.
//!
//! Invariants: the 4-byte length prefix is checked with [`wire::frame_len`]
//! (so against [`wire::MAX_FRAME`], and for emptiness) before any body byte
//! is read; the body buffer is then reserved at that length (at most
//! `MAX_FRAME`, from a peer that passed the link handshake), but its memory
//! is written, and so committed, only as bytes arrive. Once the first byte of a frame has
//! arrived, the whole frame must arrive within the frame timeout, so a peer
//! cannot hold a half-sent frame (and its buffer) open forever.

use crate::wire::{self, Frame, FrameError};
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why no frame could be read; every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame (size, version, or body).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The stream ended in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// A frame was started but not completed in time.
    #[error("frame not completed within {0:?}")]
    Stalled(Duration),
    /// No frame was started in time.
    #[error("idle for {0:?}")]
    Idle(Duration),
}

/// Frames at least this big are decoded sharing their buffer (a block's
/// bytes become a slice of it); smaller ones, where copying their few
/// byte strings costs less than making the buffer shared, are not.
const SHARE_MIN: usize = 64 << 10;

/// Encodes `frame` into a fresh buffer, length prefix included.
pub(crate) fn encode_frame(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    wire::encode(frame, &mut out)?;
    Ok(out)
}

/// Reads the next frame from `r`: `Ok(None)` on a clean end of stream (no
/// byte of a new frame read). `idle` bounds the wait for a frame's first
/// byte, `frame_timeout` the time from that byte to the frame's last; `None`
/// waits forever. Cancel-safe only between frames: a caller that drops this
/// future mid-frame must drop the stream too.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    idle: Option<Duration>,
    frame_timeout: Option<Duration>,
) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0u8; 4];
    let first = match idle {
        Some(d) => tokio::time::timeout(d, r.read(&mut prefix))
            .await
            .map_err(|_| ReadError::Idle(d))?,
        None => r.read(&mut prefix).await,
    };
    let got = first?;
    if got == 0 {
        return Ok(None);
    }
    let deadline = frame_timeout.map(|d| (Instant::now() + d, d));
    within(deadline, r.read_exact(&mut prefix[got..])).await?;
    let len = match wire::frame_len(&prefix)? {
        Some(len) => len,
        // frame_len only answers None for fewer than 4 bytes.
        None => return Err(ReadError::Truncated),
    };
    // Reserved whole (the length is checked against MAX_FRAME above), so a
    // large frame is never copied while it grows; the memory is only
    // touched as bytes arrive.
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let mut rest = (&mut *r).take((len - body.len()) as u64);
        if within(deadline, rest.read_buf(&mut body)).await? == 0 {
            return Err(ReadError::Truncated);
        }
    }
    if len < SHARE_MIN {
        return Ok(Some(wire::decode_body(&body)?));
    }
    // The body becomes shared (no copy): a block's bytes decode as a
    // slice of it.
    Ok(Some(wire::decode_shared(&bytes::Bytes::from(body))?))
}

/// Runs one read step of a frame, bounded by the frame's deadline, mapping
/// an early end of stream to [`ReadError::Truncated`].
async fn within<F>(deadline: Option<(Instant, Duration)>, step: F) -> Result<usize, ReadError>
where
    F: Future<Output = io::Result<usize>>,
{
    let result = match deadline {
        Some((at, d)) => tokio::time::timeout_at(at, step)
            .await
            .map_err(|_| ReadError::Stalled(d))?,
        None => step.await,
    };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Truncated,
        _ => ReadError::Io(e),
    })
}

/// Writes the encoded frames from `rx` to `w` until every sender is gone,
/// then shuts the write side down. Frames queued together are flushed
/// together. A write that makes no progress for `stall` fails the writer, so
/// a peer that stops reading cannot pin the task and its queue forever.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stall: Duration,
) -> io::Result<()> {
    let mut w = BufWriter::new(w);
    while let Some(buf) = rx.recv().await {
        bounded(stall, w.write_all(&buf)).await?;
        while let Ok(buf) = rx.try_recv() {
            bounded(stall, w.write_all(&buf)).await?;
        }
        bounded(stall, w.flush()).await?;
    }
    bounded(stall, w.shutdown()).await
}

/// One write step, failed with `TimedOut` if it takes longer than `stall`.
async fn bounded<F: Future<Output = io::Result<()>>>(stall: Duration, step: F) -> io::Result<()> {
    tokio::time::timeout(stall, step).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("peer accepted no bytes for {stall:?}"),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ChordRequest, Request};
    use tokio::io::AsyncWriteExt;

    const LIMIT: Duration = Duration::from_secs(5);

    fn ping(id: u64) -> Frame {
        Frame::Request {
            id,
            body: Request::Chord(ChordRequest::Ping),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_through_the_writer() {
        let (a, mut b) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_frames(a, rx, LIMIT));
        for id in 0..3 {
            tx.send(encode_frame(&ping(id)).unwrap()).await.unwrap();
        }
        drop(tx);
        let read = async {
            for id in 0..3 {
                let f = read_frame(&mut b, None, None).await.unwrap();
                assert_eq!(f, Some(ping(id)));
            }
            assert!(read_frame(&mut b, None, None).await.unwrap().is_none());
        };
        tokio::time::timeout(LIMIT, read).await.unwrap();
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn huge_prefix_is_refused_before_reading_on() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0xff; 4]).await.unwrap();
        let r = tokio::time::timeout(LIMIT, read_frame(&mut b, None, None)).await;
        assert!(matches!(
            r,
            Ok(Err(ReadError::Frame(FrameError::TooLarge(_))))
        ));
    }

    #[tokio::test]
    async fn eof_mid_frame_is_truncated() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
        drop(a);
        let r = tokio::time::timeout(LIMIT, read_frame(&mut b, None, None)).await;
        assert!(matches!(r, Ok(Err(ReadError::Truncated))));
    }

    #[tokio::test]
    async fn stalled_and_idle_streams_time_out() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let short = Some(Duration::from_millis(100));
        let r = tokio::time::timeout(LIMIT, read_frame(&mut b, short, short)).await;
        assert!(matches!(r, Ok(Err(ReadError::Idle(_)))));
        a.write_all(&[0, 0]).await.unwrap();
        let r = tokio::time::timeout(LIMIT, read_frame(&mut b, None, short)).await;
        assert!(matches!(r, Ok(Err(ReadError::Stalled(_)))));
    }
}

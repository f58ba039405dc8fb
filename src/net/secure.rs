//! An encrypted, authenticated byte stream: Noise transport messages over
//! a socket, behind `AsyncRead` + `AsyncWrite` so the frame layer above is
//! unchanged.
//!
//! On the wire every message is a 2-byte big-endian length and that many
//! bytes of ciphertext (at most [`MAX_MESSAGE`], the Noise limit, tag
//! included). A message that does not decrypt (tampered, replayed,
//! reordered, or from someone without the session keys) fails the stream
//! with `InvalidData`; there is no way to inject plaintext.
//!
//! Bounds: the read buffer holds at most two messages; a write seals at most
//! one message and accepts no more bytes until it is on the socket. The
//! buffers are allocated once per link and never resized (no zero-filling
//! per message), and a message is decrypted straight into the reader's
//! buffer when it fits there, so a bulk transfer costs one copy and the
//! cipher on each side.

use snow::TransportState;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest Noise message, tag included.
pub const MAX_MESSAGE: usize = 65535;
/// Authentication tag per message.
const TAG: usize = 16;
/// Plaintext bytes per message.
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;
/// Read buffer: room for one whole message and most of the next.
const READ_BUF: usize = 2 * (2 + MAX_MESSAGE);

/// A Noise-secured stream over `S`.
pub struct SecureStream<S> {
    io: S,
    noise: TransportState,
    /// Ciphertext read but not yet decrypted: `rbuf[rstart..rend]`.
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    /// Decrypted bytes not yet handed out: `plain[ppos..plen]`.
    plain: Box<[u8]>,
    ppos: usize,
    plen: usize,
    /// One sealed message on its way out: `out[opos..olen]`.
    out: Box<[u8]>,
    opos: usize,
    olen: usize,
}

impl<S> SecureStream<S> {
    /// Wraps `io` once the handshake has produced `noise`.
    pub fn new(io: S, noise: TransportState) -> SecureStream<S> {
        SecureStream {
            io,
            noise,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            plain: vec![0; MAX_PLAIN].into_boxed_slice(),
            ppos: 0,
            plen: 0,
            out: vec![0; 2 + MAX_MESSAGE].into_boxed_slice(),
            opos: 0,
            olen: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, giving up the session (tests write raw bytes
    /// after it).
    #[cfg(test)]
    pub fn into_inner(self) -> S {
        self.io
    }

    /// The plaintext length of the next message if it is buffered whole.
    fn next_message(&self) -> io::Result<Option<usize>> {
        let have = self.rend - self.rstart;
        if have < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.rbuf[self.rstart], self.rbuf[self.rstart + 1]]) as usize;
        if len < TAG {
            return Err(invalid(format!(
                "secure message of {len} bytes is too short"
            )));
        }
        Ok((have >= 2 + len).then_some(len - TAG))
    }

    /// Decrypts the next message (buffered whole) into `out`, which has
    /// room for its plaintext; returns the plaintext length.
    fn decrypt_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let len = u16::from_be_bytes([self.rbuf[self.rstart], self.rbuf[self.rstart + 1]]) as usize;
        let msg = &self.rbuf[self.rstart + 2..self.rstart + 2 + len];
        let n = self
            .noise
            .read_message(msg, out)
            .map_err(|e| invalid(format!("secure message does not decrypt: {e}")))?;
        self.rstart += 2 + len;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        Ok(n)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S: AsyncWrite + Unpin> SecureStream<S> {
    /// Writes the pending sealed message out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.opos < self.olen {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.opos..self.olen]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.opos += n;
        }
        self.opos = 0;
        self.olen = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SecureStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ppos < this.plen {
                let n = buf.remaining().min(this.plen - this.ppos);
                buf.put_slice(&this.plain[this.ppos..this.ppos + n]);
                this.ppos += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(plain_len) = this.next_message()? {
                if buf.remaining() >= plain_len && plain_len > 0 {
                    // Straight into the reader's buffer: no extra copy.
                    let n = this.decrypt_into(buf.initialize_unfilled_to(plain_len))?;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                let mut plain = std::mem::take(&mut this.plain);
                let n = this.decrypt_into(&mut plain);
                this.plain = plain;
                this.ppos = 0;
                this.plen = n?;
                continue;
            }
            // Need more ciphertext: make room at the end, then read.
            if this.rend == this.rbuf.len() {
                this.rbuf.copy_within(this.rstart..this.rend, 0);
                this.rend -= this.rstart;
                this.rstart = 0;
            }
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            let got = rb.filled().len();
            if got == 0 {
                if this.rend == this.rstart {
                    return Poll::Ready(Ok(())); // clean end between messages
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a secure message",
                )));
            }
            this.rend += got;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SecureStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PLAIN);
        let len = this
            .noise
            .write_message(&buf[..n], &mut this.out[2..2 + n + TAG])
            .map_err(|e| io::Error::other(format!("cannot seal message: {e}")))?;
        this.out[..2].copy_from_slice(&(len as u16).to_be_bytes());
        this.olen = 2 + len;
        this.opos = 0;
        // Start sending now; what is left goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

//! Byte strings decoded as slices of the frame that carried them.
//!
//! A block put arrives as one frame of ~1 MiB. Decoding its data as a
//! fresh `Bytes` copied the whole block once more on every replica (a
//! sixth of all `memmove` samples during a 256 MiB copy into a 5-node
//! ring). [`with_frame`] makes a received frame's buffer the one that
//! [`deserialize`] slices from while the frame is decoded: a field marked
//! `#[serde(deserialize_with = "crate::frame_bytes::deserialize")]` then
//! shares the frame's memory. Outside [`with_frame`] (or for bytes that do
//! not lie inside the frame) it copies, as the plain `Bytes` decoder does.
//! The encoding is unchanged: a byte string, as for a `Vec<u8>`.

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{Error, SeqAccess, Visitor};
use std::cell::RefCell;

thread_local! {
    /// The frame being decoded on this thread, if any.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Restores the previous frame when a decode ends (also by unwinding).
struct Restore(Option<Bytes>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        FRAME.with(|c| *c.borrow_mut() = prev);
    }
}

/// Runs `decode` over `frame`'s bytes with `frame` as the buffer that
/// [`deserialize`] slices from.
pub fn with_frame<T>(frame: &Bytes, decode: impl FnOnce(&[u8]) -> T) -> T {
    let _restore = Restore(FRAME.with(|c| c.replace(Some(frame.clone()))));
    decode(frame)
}

/// `v` as a `Bytes`: a slice of the current frame if it lies inside it,
/// else a copy.
fn share(v: &[u8]) -> Bytes {
    FRAME.with(|c| match &*c.borrow() {
        Some(f) if inside(f, v) => f.slice_ref(v),
        _ => Bytes::copy_from_slice(v),
    })
}

/// Whether `v`'s memory lies within `frame`'s.
fn inside(frame: &[u8], v: &[u8]) -> bool {
    let (start, at) = (frame.as_ptr() as usize, v.as_ptr() as usize);
    at >= start && at + v.len() <= start + frame.len()
}

/// Decodes a byte string as `Bytes`, sharing the current frame's memory
/// where it can (see the module docs).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct Shared;
    impl<'de> Visitor<'de> for Shared {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(share(v))
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Bytes::from(v))
        }
    }
    d.deserialize_bytes(Shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Carrier {
        n: u32,
        #[serde(deserialize_with = "deserialize")]
        data: Bytes,
        tail: Vec<u8>,
    }

    #[test]
    fn inside_a_frame_the_bytes_share_its_memory_and_outside_they_are_copied() {
        let c = Carrier {
            n: 7,
            data: Bytes::from(vec![9u8; 5000]),
            tail: vec![1, 2, 3],
        };
        let frame = Bytes::from(postcard::to_stdvec(&c).unwrap());
        let d: Carrier = with_frame(&frame, |b| postcard::from_bytes(b).unwrap());
        assert_eq!(d, c);
        assert!(inside(&frame, &d.data), "a slice of the frame");
        // Outside `with_frame`: a copy, equal all the same.
        let e: Carrier = postcard::from_bytes(&frame).unwrap();
        assert_eq!(e, c);
        assert!(!inside(&frame, &e.data));
        // And the frame is forgotten once its decode ended.
        assert!(FRAME.with(|f| f.borrow().is_none()));
    }

    #[test]
    fn bytes_from_another_buffer_are_copied_not_sliced() {
        let frame = Bytes::from(vec![0u8; 64]);
        let other = postcard::to_stdvec(&Carrier {
            n: 1,
            data: Bytes::from_static(b"elsewhere"),
            tail: Vec::new(),
        })
        .unwrap();
        let d: Carrier = with_frame(&frame, |_| postcard::from_bytes(&other).unwrap());
        assert_eq!(&d.data[..], b"elsewhere");
        assert!(!inside(&frame, &d.data));
    }

    #[test]
    fn a_self_describing_format_decodes_it_too() {
        let c = Carrier {
            n: 2,
            data: Bytes::from_static(b"json"),
            tail: vec![4],
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Carrier>(&s).unwrap(), c);
    }
}

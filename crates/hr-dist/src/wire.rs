//! Blocking socket I/O with absolute deadlines (no read or write can hang past its deadline) and
//! the authenticated framing every message after the handshake travels in.
//!
//! I/O goes through [`Source`] and [`Sink`], implemented by `TcpStream` (with deadlines) and by
//! byte slices and vectors, so the parsers run on plain bytes in the fuzz targets and the tests.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

/// Bytes of a frame's authentication tag (AES-GCM).
pub const TAG: usize = 16;
/// Payload bytes read (and allocated) at a time, so a forged length costs memory only as bytes
/// actually arrive.
const CHUNK: usize = 1 << 20;

/// A byte source read with a deadline.
pub trait Source {
    /// Fills `buf`, failing with `TimedOut` at `deadline` and `UnexpectedEof` at the end.
    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<()>;
}

/// A byte sink written with a deadline.
pub trait Sink {
    /// Writes all of `buf`, failing with `TimedOut` at `deadline`.
    fn write_all_by(&mut self, buf: &[u8], deadline: Instant) -> io::Result<()>;
}

fn remaining(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    Ok(left)
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn closed(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, "connection closed")
}

impl Source for TcpStream {
    fn read_exact_by(&mut self, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
        while !buf.is_empty() {
            self.set_read_timeout(Some(remaining(deadline)?))?;
            match self.read(buf) {
                Ok(0) => return Err(closed(io::ErrorKind::UnexpectedEof)),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if is_retry(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Sink for TcpStream {
    fn write_all_by(&mut self, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
        while !buf.is_empty() {
            self.set_write_timeout(Some(remaining(deadline)?))?;
            match self.write(buf) {
                Ok(0) => return Err(closed(io::ErrorKind::WriteZero)),
                Ok(n) => buf = &buf[n..],
                Err(e) if is_retry(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Source for &[u8] {
    fn read_exact_by(&mut self, buf: &mut [u8], _deadline: Instant) -> io::Result<()> {
        self.read_exact(buf)
    }
}

impl Sink for Vec<u8> {
    fn write_all_by(&mut self, buf: &[u8], _deadline: Instant) -> io::Result<()> {
        self.extend_from_slice(buf);
        Ok(())
    }
}

/// Reads a little-endian u32.
pub fn read_u32(s: &mut impl Source, deadline: Instant) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact_by(&mut b, deadline)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads `len` bytes, allocating as they arrive (at most [`CHUNK`] ahead of the data).
pub fn read_vec(s: &mut impl Source, len: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(len.min(CHUNK));
    while v.len() < len {
        let start = v.len();
        v.resize(start + (len - start).min(CHUNK), 0);
        s.read_exact_by(&mut v[start..], deadline)?;
    }
    Ok(v)
}

/// An invalid-data error (a malformed or forged message).
pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One direction of an authenticated connection: AES-256-GCM under a key derived in the
/// handshake, with a frame counter as the nonce. The payload is encrypted, the header is
/// authenticated with it, and the counter is implicit (both ends count), so an injected,
/// replayed, reordered, dropped or altered frame fails its tag.
/// Not `Clone` outside tests: a copy would seal with the same counter, reusing nonces.
#[cfg_attr(test, derive(Clone))]
pub struct FrameKey {
    key: LessSafeKey,
    counter: u64,
}

impl FrameKey {
    /// A key for one direction: AES-256 under the SHA-256 of `secret` (the handshake's
    /// per-connection, per-direction secret).
    pub fn new(secret: &[u8]) -> FrameKey {
        let k = Sha256::digest(secret);
        let key = UnboundKey::new(&AES_256_GCM, &k)
            .unwrap_or_else(|_| unreachable!("a SHA-256 digest is an AES-256 key"));
        FrameKey {
            key: LessSafeKey::new(key),
            counter: 0,
        }
    }

    /// The next nonce: the frame counter (unique per key, as each key serves one direction of
    /// one connection).
    fn next_nonce(&mut self) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&self.counter.to_le_bytes());
        self.counter += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `data` in place and returns the tag of the next frame sent (over `header` and
    /// `data`).
    pub fn seal(&mut self, header: &[u8], data: &mut [u8]) -> [u8; TAG] {
        let nonce = self.next_nonce();
        let t = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), data)
            .unwrap_or_else(|_| unreachable!("AES-GCM seals any frame below 64 GiB"));
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(t.as_ref());
        tag
    }

    /// Checks the tag of the next frame received and decrypts `data` in place.
    pub fn open(&mut self, header: &[u8], data: &mut [u8], tag: &[u8]) -> io::Result<()> {
        let nonce = self.next_nonce();
        let tag = Tag::try_from(tag).map_err(|_| invalid("a frame tag of the wrong size"))?;
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(header), tag, data, 0..)
            .map(|_| ())
            .map_err(|_| {
                invalid(
                    "a frame failed authentication (injected, replayed, reordered or corrupted)",
                )
            })
    }
}

/// One sealed frame as sent: `header` in clear, then `len` payload bytes written by `fill` and
/// encrypted in place, then the tag over both (every frame of the store and the ring).
pub fn seal_frame(
    key: &mut FrameKey,
    header: &[u8],
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut msg = vec![0u8; header.len() + len + TAG];
    let (head, rest) = msg.split_at_mut(header.len());
    let (body, tag) = rest.split_at_mut(len);
    head.copy_from_slice(header);
    fill(body);
    tag.copy_from_slice(&key.seal(head, body));
    msg
}

/// Writes one authenticated message: a u32 length, the encrypted body, its tag.
pub fn write_frame(
    s: &mut impl Sink,
    key: &mut FrameKey,
    body: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let len = (body.len() as u32).to_le_bytes();
    let msg = seal_frame(key, &len, body.len(), |b| b.copy_from_slice(body));
    s.write_all_by(&msg, deadline)
}

/// Reads one authenticated message written by [`write_frame`], refusing bodies above `max`.
pub fn read_frame(
    s: &mut impl Source,
    key: &mut FrameKey,
    max: usize,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let len = read_u32(s, deadline)?;
    if len as usize > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut body = read_vec(s, len as usize, deadline)?;
    let mut tag = [0u8; TAG];
    s.read_exact_by(&mut tag, deadline)?;
    key.open(&len.to_le_bytes(), &mut body, &tag)?;
    Ok(body)
}

/// Appends a u32 length prefix and the bytes to `out`.
pub fn put_blob(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// A cursor over a message body, for the decoders.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("message ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next byte.
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    /// The next length-prefixed blob, refusing lengths above `max`.
    pub fn blob(&mut self, max: usize) -> io::Result<&'a [u8]> {
        let b = self.take(4)?;
        let len = u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
        if len > max {
            return Err(invalid(format!(
                "field of {len} bytes exceeds the limit of {max}"
            )));
        }
        self.take(len)
    }

    /// Fails unless every byte was consumed.
    pub fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!("{} trailing bytes", self.0.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    /// Two frames sealed in order; the receiver's view of them delivered in various ways.
    fn two_frames() -> (Vec<u8>, Vec<u8>) {
        let mut k = FrameKey::new(b"session");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_frame(&mut a, &mut k, b"first", far()).unwrap();
        write_frame(&mut b, &mut k, b"second", far()).unwrap();
        (a, b)
    }

    fn receive(stream: &[u8], n: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut k = FrameKey::new(b"session");
        let mut s = stream;
        (0..n)
            .map(|_| read_frame(&mut s, &mut k, 1024, far()))
            .collect()
    }

    #[test]
    fn frames_in_order_open() {
        let (a, b) = two_frames();
        let got = receive(&[a, b].concat(), 2).unwrap();
        assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn reordered_replayed_dropped_altered_or_injected_frames_fail() {
        let (a, b) = two_frames();
        let forged = {
            // An attacker without the session key seals with a key of its own.
            let mut k = FrameKey::new(b"guess");
            let mut v = Vec::new();
            write_frame(&mut v, &mut k, b"evil", far()).unwrap();
            v
        };
        let mut altered = a.clone();
        altered[5] ^= 1;
        for (what, stream) in [
            ("reordered", [b.clone(), a.clone()].concat()),
            ("replayed", [a.clone(), a.clone()].concat()),
            ("dropped", [b.clone(), b.clone()].concat()),
            ("altered", [altered, b.clone()].concat()),
            ("injected", [a.clone(), forged, b.clone()].concat()),
        ] {
            let err = receive(&stream, 2).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(err.to_string().contains("authentication"), "{what}: {err}");
        }
    }

    #[test]
    fn a_forged_length_allocates_only_what_arrives() {
        let mut s: &[u8] = &[1, 2, 3];
        let err = read_vec(&mut s, usize::MAX / 2, far()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}

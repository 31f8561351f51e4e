//! Blocking socket I/O with absolute deadlines, so no read or write can hang past its deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

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

/// Fills `buf` from `s`, failing with `TimedOut` at `deadline` and `UnexpectedEof` on a closed peer.
pub fn read_exact_by(s: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        s.set_read_timeout(Some(remaining(deadline)?))?;
        match s.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` to `s`, failing with `TimedOut` at `deadline`.
pub fn write_all_by(s: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        s.set_write_timeout(Some(remaining(deadline)?))?;
        match s.write(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ))
            }
            Ok(n) => buf = &buf[n..],
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a little-endian u32.
pub fn read_u32(s: &mut TcpStream, deadline: Instant) -> io::Result<u32> {
    let mut b = [0u8; 4];
    read_exact_by(s, &mut b, deadline)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a little-endian u64.
pub fn read_u64(s: &mut TcpStream, deadline: Instant) -> io::Result<u64> {
    let mut b = [0u8; 8];
    read_exact_by(s, &mut b, deadline)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a u32 length prefix followed by that many bytes, refusing lengths above `max`.
pub fn read_blob(s: &mut TcpStream, max: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let len = read_u32(s, deadline)? as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut v = vec![0u8; len];
    read_exact_by(s, &mut v, deadline)?;
    Ok(v)
}

/// Appends a u32 length prefix and the bytes to `out`.
pub fn put_blob(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

//! The ring's frames: an 18-byte header (kind, op, collective sequence number, payload bytes),
//! the payload encrypted with AES-256-GCM under the link's key, and the 16-byte tag over both;
//! sending, and receiving with every check a frame from a neighbour must pass.

use std::io;
use std::time::{Duration, Instant};

use super::{io_fail, op_name, Fail, HDR, KIND_ABORT, KIND_DATA, MAX_PAYLOAD, MAX_REASON};
use crate::wire::{read_vec, seal_frame, FrameKey, Sink, Source, TAG};

pub(super) fn header(kind: u8, op: u8, seq: u64, nbytes: u64) -> [u8; HDR] {
    let mut h = [0u8; HDR];
    h[0] = kind;
    h[1] = op;
    h[2..10].copy_from_slice(&seq.to_le_bytes());
    h[10..18].copy_from_slice(&nbytes.to_le_bytes());
    h
}

/// A frame's header fields: kind, op, sequence number (the lost rank in an abort), length.
fn parse_header(h: &[u8; HDR]) -> (u8, u8, u64, u64) {
    let u = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    (h[0], h[1], u(&h[2..10]), u(&h[10..18]))
}

pub(super) fn send_msg(
    s: &mut impl Sink,
    key: &mut FrameKey,
    op: u8,
    seq: u64,
    data: &[f32],
    deadline: Instant,
    peer: usize,
) -> std::result::Result<(), Fail> {
    let len = 4 * data.len();
    let msg = seal_frame(key, &header(KIND_DATA, op, seq, len as u64), len, |body| {
        for (b, x) in body.chunks_exact_mut(4).zip(data) {
            b.copy_from_slice(&x.to_le_bytes());
        }
    });
    s.write_all_by(&msg, deadline).map_err(|e| io_fail(peer, e))
}

pub(super) fn send_abort(
    s: &mut impl Sink,
    key: &mut FrameKey,
    lost: usize,
    reason: &str,
) -> io::Result<()> {
    let r = &reason.as_bytes()[..reason.len().min(MAX_REASON as usize)];
    let h = header(KIND_ABORT, 0, lost as u64, r.len() as u64);
    let msg = seal_frame(key, &h, r.len(), |b| b.copy_from_slice(r));
    s.write_all_by(&msg, Instant::now() + Duration::from_secs(1))
}

/// Checks the payload length a frame of `kind` announces; the error says why it is refused.
fn check_payload_len(
    kind: u8,
    nbytes: u64,
    expect: Option<usize>,
) -> std::result::Result<(), String> {
    let refused = match (kind, expect) {
        (KIND_DATA, Some(n)) if nbytes != 4 * n as u64 => format!(
            "sent a frame of {nbytes} bytes where {n} floats were expected (buffer lengths \
             differ between ranks, or the frame is corrupt)"
        ),
        (KIND_DATA, None) if !nbytes.is_multiple_of(4) || nbytes > MAX_PAYLOAD => format!(
            "sent a frame of {nbytes} bytes (not whole floats, or above the {MAX_PAYLOAD}-byte \
             limit)"
        ),
        (KIND_DATA, _) => return Ok(()),
        (KIND_ABORT, _) if nbytes > MAX_REASON => {
            format!("sent an abort frame of {nbytes} bytes (the limit is {MAX_REASON})")
        }
        (KIND_ABORT, _) => return Ok(()),
        _ => format!("sent a malformed frame (kind {kind})"),
    };
    Err(refused)
}

/// Receives one frame from the left neighbour `peer`: its floats, or the failure it reports.
/// Nothing in a frame is acted on before its tag is checked, except the length it announces
/// (bounded first, and allocated only as bytes arrive).
pub(crate) fn recv_msg(
    s: &mut impl Source,
    key: &mut FrameKey,
    op: u8,
    seq: u64,
    expect: Option<usize>,
    deadline: Instant,
    peer: usize,
) -> std::result::Result<Vec<f32>, Fail> {
    let bad = |reason: String| Fail::Bad { peer, reason };
    let mut h = [0u8; HDR];
    s.read_exact_by(&mut h, deadline)
        .map_err(|e| io_fail(peer, e))?;
    let (kind, their_op, their_seq, nbytes) = parse_header(&h);
    check_payload_len(kind, nbytes, expect).map_err(bad)?;
    let mut body = match expect {
        // The length this rank expects (checked above): allocated at once.
        Some(_) => {
            let mut v = vec![0u8; nbytes as usize];
            s.read_exact_by(&mut v, deadline).map(|()| v)
        }
        // A length only the peer knows (all-gather): allocated as the bytes arrive.
        None => read_vec(s, nbytes as usize, deadline),
    }
    .map_err(|e| io_fail(peer, e))?;
    let mut tag = [0u8; TAG];
    s.read_exact_by(&mut tag, deadline)
        .map_err(|e| io_fail(peer, e))?;
    key.open(&h, &mut body, &tag).map_err(|_| {
        bad(
            "sent a frame that failed authentication (injected, replayed or altered on the \
             network, or a peer with another key)"
                .into(),
        )
    })?;
    if kind == KIND_ABORT {
        return Err(Fail::Abort {
            lost: their_seq as usize,
            reason: format!("rank {peer} aborted: {}", String::from_utf8_lossy(&body)),
        });
    }
    if their_op != op || their_seq != seq {
        return Err(bad(format!(
            "sent {} #{their_seq} while this rank is in {} #{seq} (ranks must call collectives \
             in the same order)",
            op_name(their_op),
            op_name(op)
        )));
    }
    Ok(body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

//! The wire parsers of the rendezvous store and the ring as functions of bytes: the entry points
//! of the `rendezvous` and `ring` fuzz targets (`crates/hr-fuzz`). Each feeds the bytes twice:
//! as they arrive from the network (an attacker without the job token: everything after the
//! handshake must fail its tag) and sealed by the harness under the connection key (a peer that
//! holds the token but sends whatever it likes: the decoders behind the tag check). Any input
//! must give a typed error or a value, never a panic, a hang or an allocation the bytes do not
//! pay for.

use std::time::{Duration, Instant};

use crate::auth::{client_handshake, server_handshake, Hello, Link, Token};
use crate::ring::{recv_msg, HDR, KIND_DATA, OP_ALL_REDUCE};
use crate::store::{serve_one, Reply, Request, Shared};
use crate::wire::{seal_frame, FrameKey, Sink, Source};

/// The connection key both ends of a fuzzed stream use.
const KEY: &[u8] = b"fuzz-connection-key";

/// Bytes in, bytes out: a connection whose peer sent `input`.
struct Duplex<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Source for Duplex<'_> {
    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
        self.input.read_exact_by(buf, deadline)
    }
}

impl Sink for Duplex<'_> {
    fn write_all_by(&mut self, buf: &[u8], deadline: Instant) -> std::io::Result<()> {
        self.output.write_all_by(buf, deadline)
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

fn link() -> Link {
    Link {
        send: FrameKey::new(KEY),
        recv: FrameKey::new(KEY),
    }
}

/// Splits `data` into pieces, each preceded by its u16 length (the last may be short).
fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

/// Serves `stream` as the store does one connection after its handshake, until it fails.
fn serve_stream(stream: &[u8]) {
    let shared = Shared::stopped();
    let (mut conn, mut link) = (
        Duplex {
            input: stream,
            output: Vec::new(),
        },
        link(),
    );
    while serve_one(&mut conn, &shared, &mut link).is_ok() {}
}

/// The rendezvous store: both handshake sides on raw bytes, the server on a raw and a sealed
/// stream of requests, and the client's reply decoder on each piece.
pub fn rendezvous(data: &[u8]) {
    let Ok(token) = Token::new("fuzz") else {
        return;
    };
    let hello = Hello {
        role: crate::store::ROLE_STORE,
        rank: 0,
    };
    let _ = server_handshake(
        &mut Duplex {
            input: data,
            output: Vec::new(),
        },
        &token,
        deadline(),
    );
    let _ = client_handshake(
        &mut Duplex {
            input: data,
            output: Vec::new(),
        },
        &token,
        hello,
        deadline(),
    );
    serve_stream(data);
    let requests = [
        Request::Set {
            key: vec![],
            value: vec![],
        },
        Request::Get { key: vec![] },
        Request::Wait { key: vec![], ms: 0 },
        Request::Add {
            key: vec![],
            delta: 0,
        },
        Request::SetIfAbsent {
            key: vec![],
            value: vec![],
        },
    ];
    let (mut sealed, mut key) = (Vec::new(), FrameKey::new(KEY));
    for body in pieces(data) {
        let _ = crate::wire::write_frame(&mut sealed, &mut key, body, deadline());
        for r in &requests {
            let _ = Reply::decode(r, body);
        }
    }
    serve_stream(&sealed);
}

/// The ring's receiver: frames from a left neighbour, raw and sealed (with their announced
/// lengths made true, so the decoders behind the tag see them). The first byte picks the
/// expected length (odd: `byte / 2` floats; even: none, as in an all-gather).
pub fn ring(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let expect = (first % 2 == 1).then_some(first as usize / 2);
    let receive = |mut stream: &[u8]| {
        let mut key = FrameKey::new(KEY);
        for seq in 1.. {
            if recv_msg(
                &mut stream,
                &mut key,
                OP_ALL_REDUCE,
                seq,
                expect,
                deadline(),
                0,
            )
            .is_err()
            {
                return;
            }
        }
    };
    receive(rest);
    let (mut sealed, mut key) = (Vec::new(), FrameKey::new(KEY));
    for piece in pieces(rest) {
        let mut frame = piece.to_vec();
        if frame.len() < HDR {
            frame.resize(HDR, KIND_DATA);
        }
        let (h, payload) = frame.split_at_mut(HDR);
        h[10..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let fill = |b: &mut [u8]| b.copy_from_slice(payload);
        sealed.extend(seal_frame(&mut key, h, payload.len(), fill));
    }
    receive(&sealed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::write_frame;

    /// A sealed stream of well-formed requests is served, and a raw one is refused at its tag.
    #[test]
    fn sealed_requests_are_served_and_raw_ones_refused() {
        let reqs = [
            Request::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Request::Add {
                key: b"n".to_vec(),
                delta: 5,
            },
            Request::Get { key: b"k".to_vec() },
        ];
        let (mut sealed, mut key) = (Vec::new(), FrameKey::new(KEY));
        for r in &reqs {
            write_frame(&mut sealed, &mut key, &r.encode(), deadline()).unwrap();
        }
        let shared = Shared::stopped();
        let (mut conn, mut l) = (
            Duplex {
                input: &sealed,
                output: Vec::new(),
            },
            link(),
        );
        for _ in &reqs {
            serve_one(&mut conn, &shared, &mut l).unwrap();
        }
        let mut replies = &conn.output[..];
        let mut rk = FrameKey::new(KEY);
        let got: Vec<Reply> = reqs
            .iter()
            .map(|r| {
                let body =
                    crate::wire::read_frame(&mut replies, &mut rk, 1 << 20, deadline()).unwrap();
                Reply::decode(r, &body).unwrap()
            })
            .collect();
        assert_eq!(
            got,
            vec![
                Reply::Done,
                Reply::Count(Some(5)),
                Reply::Value(Some(b"v".to_vec()))
            ]
        );
        // Framed like a peer's request but sealed without the connection key.
        let mut forged = Vec::new();
        write_frame(
            &mut forged,
            &mut FrameKey::new(b"guess"),
            &reqs[0].encode(),
            deadline(),
        )
        .unwrap();
        for input in [reqs[0].encode(), forged] {
            let mut raw = Duplex {
                input: &input,
                output: Vec::new(),
            };
            assert!(serve_one(&mut raw, &shared, &mut link()).is_err());
            assert!(raw.output.is_empty(), "answered an unauthenticated request");
        }
    }

    #[test]
    fn the_entries_take_any_bytes() {
        for data in [&b""[..], b"\x01", &[0xff; 64], b"HRDIST01\x01\0\0\0\0"] {
            rendezvous(data);
            ring(data);
        }
    }
}

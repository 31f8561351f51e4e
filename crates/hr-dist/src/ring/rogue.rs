//! Rogue-peer trials (docs/RELIABILITY.md): in a world of 3, a random rank, after one to three
//! all-reduces, writes into its link to the right neighbour what a broken or
//! hostile peer would — random bytes, a frame cut short, a frame sealed with a key the link does
//! not have (a host injecting into the connection), a replay of an earlier frame, or two frames
//! in reverse order — then holds its sockets open without taking part. Every other rank must
//! fail within the 2 s deadline (plus the liveness grace and scheduling slack), naming it.
//! `HR_RELIABILITY_TRIALS` trials of each kind (default 3; RELIABILITY.md has 20).

use super::*;
use crate::testing::run_world;
use crate::wire::{seal_frame, Sink};
use hr_core::Rng;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
enum Rogue {
    Garbage,
    Truncated,
    Forged,
    Replayed,
    Reordered,
}

const KINDS: [Rogue; 5] = [
    Rogue::Garbage,
    Rogue::Truncated,
    Rogue::Forged,
    Rogue::Replayed,
    Rogue::Reordered,
];
const FLOATS: usize = 4096;

/// The first frame rank `c` would send in the next all-reduce of `FLOATS` floats.
fn next_frame(c: &RingComm, key: &mut FrameKey, seq_ahead: u64) -> Vec<u8> {
    let (w, n) = (c.world, FLOATS);
    let len = (c.rank + 1) * n / w - c.rank * n / w;
    let h = header(
        KIND_DATA,
        OP_ALL_REDUCE,
        c.seq + 1 + seq_ahead,
        4 * len as u64,
    );
    seal_frame(key, &h, 4 * len, |_| {})
}

/// Writes what a rogue peer of kind `how` sends; `before` is the link key as it was one
/// all-reduce ago (so a frame sealed with it is a replay). Then holds the sockets open until
/// the two other ranks are done (at most 3.5 s).
fn misbehave(c: &mut RingComm, how: Rogue, before: &FrameKey, rng: &mut Rng, done: &AtomicUsize) {
    let bytes = match how {
        Rogue::Garbage => (0..64 + rng.below(4096))
            .map(|_| rng.below(256) as u8)
            .collect(),
        Rogue::Truncated => {
            let mut key = c.right_key.clone();
            let f = next_frame(c, &mut key, 0);
            f[..1 + rng.below(f.len() - 1)].to_vec()
        }
        Rogue::Forged => next_frame(c, &mut FrameKey::new(b"an attacker's guess"), 0),
        Rogue::Replayed => next_frame(c, &mut before.clone(), 0),
        Rogue::Reordered => {
            let mut key = c.right_key.clone();
            let first = next_frame(c, &mut key, 0);
            [next_frame(c, &mut key, 1), first].concat()
        }
    };
    let _ = c
        .right
        .write_all_by(&bytes, Instant::now() + Duration::from_secs(1));
    let until = Instant::now() + Duration::from_millis(3500);
    while done.load(Ordering::SeqCst) < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn names(err: &DistError, culprit: usize) -> bool {
    match err {
        DistError::PeerLost { rank, .. } | DistError::BadPeer { rank, .. } => *rank == culprit,
        DistError::Unresponsive { ranks, .. } => ranks.contains(&culprit),
        _ => false,
    }
}

#[test]
fn a_rogue_peer_is_named_in_time() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    for how in KINDS {
        let mut worst = Duration::ZERO;
        for t in 0..trials {
            let mut rng = Rng::from_parts(&[0x70c, how as u64, t]);
            // A replay needs an earlier frame.
            let (culprit, at) = (rng.below(3), 1 + rng.below(3));
            let seed = rng.next_u64();
            let done = Arc::new(AtomicUsize::new(0));
            let out = run_world(3, 2000, move |r, mut c| {
                let mut v = vec![1.0f32; FLOATS];
                for _ in 1..at {
                    c.all_reduce_sum(&mut v).unwrap();
                }
                let before = c.right_key.clone();
                c.all_reduce_sum(&mut v).unwrap();
                if r == culprit {
                    let mut rng = Rng::from_parts(&[seed]);
                    misbehave(&mut c, how, &before, &mut rng, &done);
                    return None;
                }
                let t0 = Instant::now();
                let err = c.all_reduce_sum(&mut v).unwrap_err();
                let took = t0.elapsed();
                done.fetch_add(1, Ordering::SeqCst);
                Some((err, took))
            });
            let out: Vec<_> = out.into_iter().flatten().collect();
            if matches!(how, Rogue::Forged | Rogue::Replayed | Rogue::Reordered) {
                assert!(
                    out.iter()
                        .any(|(e, _)| e.to_string().contains("failed authentication")),
                    "{how:?} trial {t}: no rank refused the frame at its tag: {out:?}"
                );
            }
            for (err, took) in out {
                assert!(
                    names(&err, culprit),
                    "{how:?} trial {t}: rank {culprit} after {at} reduces: {err}"
                );
                assert!(took < Duration::from_secs(4), "{how:?} trial {t}: {took:?}");
                worst = worst.max(took);
            }
        }
        println!("rogue peer {how:?}: {trials} trials, every rank named the culprit; slowest detection {worst:?} (deadline 2 s)");
    }
}

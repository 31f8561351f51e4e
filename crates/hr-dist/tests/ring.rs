//! Multi-rank tests of the TCP ring in threads on 127.0.0.1 (ephemeral ports, short timeouts).

use std::time::{Duration, Instant};

use hr_dist::testing::{free_port, opts, run_world, world};
use hr_dist::{
    all_gather_rows, all_gather_rows_backward, all_reduce_tensors, broadcast_tensors, init,
    init_ring, Communicator, DistError, DistOptions, Token, WorldInfo,
};
use hr_tensor::Tensor;

fn data(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + rank * 13) % 17) as f32 * 0.1 + 1.0 / (rank + 1) as f32)
        .collect()
}

#[test]
fn collectives_are_correct_and_bit_identical() {
    for n in [2, 3] {
        let out = run_world(n, 5000, move |r, mut c| {
            let mut sum = data(r, 11);
            c.all_reduce_sum(&mut sum).unwrap();
            let mut mean = data(r, 5);
            c.all_reduce_mean(&mut mean).unwrap();
            let gathered = c.all_gather(&vec![r as f32; r + 1]).unwrap();
            let mut big = if r == 1 {
                (0..300_000).map(|i| i as f32).collect()
            } else {
                vec![0.0; 300_000]
            };
            c.broadcast(&mut big, 1).unwrap();
            let mut empty: Vec<f32> = vec![];
            c.all_reduce_sum(&mut empty).unwrap();
            c.barrier().unwrap();
            assert!(hr_dist::any_rank(&mut c, r == 1).unwrap());
            assert!(!hr_dist::any_rank(&mut c, false).unwrap());
            (sum, mean, gathered, big)
        });
        for (sum, mean, gathered, big) in &out {
            for (i, got) in sum.iter().enumerate() {
                let want: f32 = (0..n).map(|r| data(r, 11)[i]).sum();
                assert!((got - want).abs() < 1e-5, "{got} vs {want}");
            }
            for (i, got) in mean.iter().enumerate() {
                let want: f32 = (0..n).map(|r| data(r, 5)[i]).sum::<f32>() / n as f32;
                assert!((got - want).abs() < 1e-5);
            }
            let want: Vec<f32> = (0..n).flat_map(|r| vec![r as f32; r + 1]).collect();
            assert_eq!(gathered, &want);
            assert!(big.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
        let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(out
            .iter()
            .all(|o| bits(&o.0) == bits(&out[0].0) && bits(&o.1) == bits(&out[0].1)));
    }
}

#[test]
fn tensor_helpers_reduce_broadcast_and_gather_with_grad() {
    let out = run_world(2, 5000, |r, mut c| {
        let g = vec![
            Tensor::from_vec(vec![r as f32 + 1.0; 6], &[2, 3]).unwrap(),
            Tensor::from_vec(vec![10.0 * (r as f32 + 1.0); 5], &[5]).unwrap(),
        ];
        // 16-byte buckets: tensors span several buckets.
        let red = all_reduce_tensors(&mut c, &g, true, 16).unwrap();
        let b = broadcast_tensors(&mut c, &g, 1, 16).unwrap();
        let x = Tensor::from_vec(vec![r as f32; 2 * (r + 1)], &[r + 1, 2]).unwrap();
        let (y, cache) = all_gather_rows(&mut c, &x).unwrap();
        let dy = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[3, 2]).unwrap();
        let dx = all_gather_rows_backward(&mut c, &cache, &dy).unwrap();
        let v = |t: &Tensor| t.to_vec_f32().unwrap();
        (
            v(&red[0]),
            v(&red[1]),
            v(&b[0]),
            y.shape().to_vec(),
            v(&y),
            dx.shape().to_vec(),
            v(&dx),
        )
    });
    for (r, (r0, r1, b0, ys, y, dxs, dx)) in out.into_iter().enumerate() {
        assert_eq!(r0, vec![1.5; 6]);
        assert_eq!(r1, vec![15.0; 5]);
        assert_eq!(b0, vec![2.0; 6]);
        assert_eq!((ys, y), (vec![3, 2], vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0]));
        // Backward: summed over the 2 ranks (each passed the same dy), this rank's rows.
        let want: Vec<f32> = if r == 0 {
            vec![0.0, 2.0]
        } else {
            vec![4.0, 6.0, 8.0, 10.0]
        };
        assert_eq!((dxs, dx), (vec![r + 1, 2], want));
    }
}

/// The overlapped all-reduce gives the plain one's values bit for bit, runs the work exactly
/// once on the calling thread while the reduction is in flight, and keeps shapes.
#[test]
fn all_reduce_alongside_matches_the_plain_reduce_and_runs_the_work() {
    let out = run_world(3, 5000, |r, mut c| {
        let g = vec![
            Tensor::from_vec(data(r, 6), &[2, 3]).unwrap(),
            Tensor::from_vec(data(r + 5, 9), &[9]).unwrap(),
        ];
        let plain = all_reduce_tensors(&mut c, &g, true, 16).unwrap();
        let mut over = g.clone();
        let caller = std::thread::current().id();
        let mut runs = Vec::new();
        c.all_reduce_tensors_alongside(&mut over, true, 16, &mut || {
            runs.push(std::thread::current().id() == caller)
        })
        .unwrap();
        let v = |ts: &[Tensor]| -> Vec<Vec<f32>> {
            ts.iter().map(|t| t.to_vec_f32().unwrap()).collect()
        };
        (v(&plain), v(&over), over[0].shape().to_vec(), runs)
    });
    for (plain, over, shape, runs) in out {
        let bits =
            |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(&plain), bits(&over));
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(runs, vec![true], "work runs once, on the calling thread");
    }
}

#[test]
fn wrong_token_rank_is_refused() {
    let port = free_port();
    let good = std::thread::spawn(move || {
        let t = Token::new("right").unwrap();
        let mut o = opts(2000);
        o.rendezvous_timeout = Duration::from_secs(2);
        init_ring(&world(0, 2, port), &t, &o).map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(200));
    let bad = init(
        &world(1, 2, port),
        &Token::new("wrong").unwrap(),
        &opts(2000),
    );
    assert!(matches!(bad, Err(DistError::Auth(_))), "{:?}", bad.err());
    let good = good.join().unwrap().unwrap_err();
    assert!(
        matches!(&good, DistError::Unresponsive { ranks, .. } if ranks == &[1]),
        "{good}"
    );
}

#[test]
fn rank_lost_mid_all_reduce_is_named() {
    let out = run_world(3, 5000, |r, mut c| {
        let mut v = vec![1.0f32; 100_000];
        c.all_reduce_sum(&mut v).unwrap();
        if r == 2 {
            drop(c); // rank 2 "dies": its connections close
            return None;
        }
        let t0 = Instant::now();
        let err = c.all_reduce_sum(&mut v).unwrap_err();
        let later = c.barrier().unwrap_err();
        Some((err, t0.elapsed(), later))
    });
    for (err, took, later) in out.into_iter().flatten() {
        assert!(matches!(err, DistError::PeerLost { rank: 2, .. }), "{err}");
        assert!(err.to_string().contains("lost rank 2"), "{err}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(later.to_string().contains("unusable"), "{later}");
    }
}

#[test]
fn hung_rank_is_named_within_the_deadline() {
    // 2 s timeout -> 0.5 s grace for the live ranks to mark themselves alive.
    let out = run_world(3, 2000, |r, mut c| {
        let mut v = vec![1.0f32; 10];
        c.all_reduce_sum(&mut v).unwrap();
        if r == 2 {
            std::thread::sleep(Duration::from_millis(4500)); // hangs, connections stay open
            return None;
        }
        let t0 = Instant::now();
        let err = c.all_reduce_sum(&mut v).unwrap_err();
        Some((err, t0.elapsed()))
    });
    for (err, took) in out.into_iter().flatten() {
        assert!(
            matches!(&err, DistError::Unresponsive { ranks, .. } if ranks == &[2]),
            "{err}"
        );
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
}

#[test]
fn lost_rank_0_store_host_is_named() {
    let out = run_world(2, 5000, |r, mut c| {
        c.barrier().unwrap();
        if r == 0 {
            return None;
        }
        let err = c.all_reduce_sum(&mut [1.0]).unwrap_err();
        Some(err)
    });
    let err = out.into_iter().flatten().next().unwrap();
    assert!(matches!(err, DistError::PeerLost { rank: 0, .. }), "{err}");
}

#[test]
fn world_of_one_is_local() {
    let mut c = init(
        &WorldInfo::single(),
        &Token::new("x").unwrap(),
        &DistOptions::default(),
    )
    .unwrap();
    let mut v = vec![1.0, 2.0];
    c.all_reduce_mean(&mut v).unwrap();
    assert_eq!((c.rank(), c.world(), v.clone()), (0, 1, vec![1.0, 2.0]));
    assert_eq!(c.all_gather(&v).unwrap(), v);
    assert!(c.broadcast(&mut v, 1).is_err());
    c.barrier().unwrap();
}

/// Under a real torchrun its agent's store already listens on `MASTER_PORT`: the ranks, whose
/// world comes from torchrun's variables, rendezvous on the next port and reduce correctly
/// while the port stays held.
#[test]
fn torchrun_held_master_port_is_not_taken() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let master_port = held.local_addr().unwrap().port();
    // The derived port must be free for the test to mean anything.
    if std::net::TcpListener::bind(("127.0.0.1", master_port + 1)).is_err() {
        eprintln!("skipped: port {} is busy", master_port + 1);
        return;
    }
    let token = Token::new("test-token").unwrap();
    let handles: Vec<_> = (0..2usize)
        .map(|r| {
            let token = token.clone();
            std::thread::spawn(move || {
                let env: std::collections::HashMap<String, String> = [
                    ("RANK", r.to_string()),
                    ("WORLD_SIZE", "2".into()),
                    ("LOCAL_RANK", r.to_string()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", master_port.to_string()),
                    ("TORCHELASTIC_RUN_ID", "test".into()),
                    ("TORCHELASTIC_RESTART_COUNT", "0".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let world = hr_dist::discover(&env).unwrap();
                assert_eq!(world.master_port, master_port + 1);
                let mut comm = init_ring(&world, &token, &opts(5000)).unwrap();
                let mut v = vec![r as f32 + 1.0; 3];
                comm.all_reduce_sum(&mut v).unwrap();
                v
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), vec![3.0; 3]);
    }
    drop(held);
}

/// Network-fault trials (docs/RELIABILITY.md): 3 ranks, a random rank (the store host
/// included) at a random collective either dies (its sockets close, as on a crash or a reset
/// connection) or stalls (stops reading and writing with its sockets open, as a stuck process or
/// a dead link does). Every other rank must fail within the 2 s deadline (plus scheduling slack),
/// naming that rank. `HR_RELIABILITY_TRIALS` trials (default 3; RELIABILITY.md has 20).
#[test]
fn a_dead_or_stalled_peer_is_named_in_time() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let (mut worst, mut stalls) = (Duration::ZERO, 0);
    for t in 0..trials {
        let mut rng = hr_core::Rng::from_parts(&[0x9e7, t]);
        let (culprit, at, stall) = (rng.below(3), rng.below(4), rng.chance(0.5));
        stalls += usize::from(stall);
        let out = run_world(3, 2000, move |r, mut c| {
            let mut v = vec![1.0f32; 4096];
            for _ in 0..at {
                c.all_reduce_sum(&mut v).unwrap();
            }
            if r == culprit {
                if stall {
                    std::thread::sleep(Duration::from_millis(3500));
                }
                return None; // dropping the communicator closes its sockets
            }
            let t0 = Instant::now();
            let err = c.all_reduce_sum(&mut v).unwrap_err();
            Some((err, t0.elapsed()))
        });
        for (err, took) in out.into_iter().flatten() {
            let named = match &err {
                DistError::PeerLost { rank, .. } => *rank == culprit,
                DistError::Unresponsive { ranks, .. } => ranks.contains(&culprit),
                _ => false,
            };
            let what = if stall { "stalled" } else { "dead" };
            assert!(
                named,
                "trial {t}: rank {culprit} {what} after {at} reduces: {err}"
            );
            assert!(
                took < Duration::from_secs(4),
                "trial {t}: detected after {took:?}"
            );
            worst = worst.max(took);
        }
    }
    println!(
        "network faults: {trials} trials ({stalls} stalled, the rest dead), every surviving rank \
         named the culprit; slowest detection {worst:?} (deadline 2 s)"
    );
}

/// Ranks `0..tokens.len()` rendezvous on `port` with their own tokens and a 2 s rendezvous
/// deadline; each rank's outcome and how long it took.
fn join_with_tokens(port: u16, tokens: &[&str]) -> Vec<(Result<(), DistError>, Duration)> {
    let n = tokens.len();
    let handles: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(r, t)| {
            let token = Token::new(t).unwrap();
            std::thread::spawn(move || {
                let mut o = opts(2000);
                o.rendezvous_timeout = Duration::from_secs(2);
                let t0 = Instant::now();
                let r = init_ring(&world(r, n, port), &token, &o).map(|_| ());
                (r, t0.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Rendezvous trials (docs/RELIABILITY.md), `HR_RELIABILITY_TRIALS` (default 3): a random rank
/// of 3 is restarted with the wrong token. It is refused by the store (or, as rank 0, hosts a
/// store nobody else can prove); every other rank fails within the 2 s rendezvous deadline
/// naming it (the store's rank 0 when it is the culprit), none hangs.
#[test]
fn a_rank_with_the_wrong_token_is_named_in_time() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let mut worst = Duration::ZERO;
    for t in 0..trials {
        let culprit = hr_core::Rng::from_parts(&[0x70e, t]).below(3);
        let mut tokens = ["job-token"; 3];
        tokens[culprit] = "stale-token";
        for (r, (res, took)) in join_with_tokens(free_port(), &tokens)
            .into_iter()
            .enumerate()
        {
            let err = res.unwrap_err();
            let msg = err.to_string();
            let named = match (&err, culprit) {
                (DistError::Auth(_), 0) => msg.contains("rank 0's rendezvous store"),
                (DistError::Auth(_), _) => r == culprit,
                (DistError::Unresponsive { ranks, .. }, _) if r == 0 && culprit == 0 => {
                    ranks == &[1, 2]
                }
                (DistError::Unresponsive { ranks, .. }, _) => ranks == &[culprit],
                _ => false,
            };
            assert!(named, "trial {t}: culprit {culprit}, rank {r}: {msg}");
            assert!(
                took < Duration::from_secs(4),
                "trial {t}: rank {r} took {took:?}"
            );
            worst = worst.max(took);
        }
    }
    println!(
        "wrong token: {trials} trials, every rank failed naming the culprit; slowest {worst:?}"
    );
}

/// Rendezvous trials, `HR_RELIABILITY_TRIALS` (default 3): a store left by an earlier run holds
/// MASTER_PORT, with the job's token or another, with or without the old run's rank claims.
/// Rank 0 cannot bind and says the port is held; every other rank fails within the 2 s
/// rendezvous deadline naming rank 0 or the held port, none hangs.
#[test]
fn a_stale_store_on_the_port_is_named_in_time() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let mut worst = Duration::ZERO;
    for t in 0..trials {
        let mut rng = hr_core::Rng::from_parts(&[0x57a, t]);
        let (same_token, claimed) = (rng.chance(0.5), rng.chance(0.5));
        let port = free_port();
        let stale_token = if same_token { "job-token" } else { "old-token" };
        let stale =
            hr_dist::StoreServer::bind(("127.0.0.1", port), Token::new(stale_token).unwrap())
                .unwrap();
        if claimed {
            let c = hr_dist::StoreClient::connect(
                "127.0.0.1",
                port,
                &Token::new(stale_token).unwrap(),
                0,
                Duration::from_secs(2),
                Duration::from_secs(2),
            )
            .unwrap();
            for r in 0..3 {
                c.set(&format!("hr-dist/rank/{r}"), b"old run").unwrap();
            }
        }
        let what = format!("trial {t} (same token {same_token}, old claims {claimed})");
        for (r, (res, took)) in join_with_tokens(port, &["job-token"; 3])
            .into_iter()
            .enumerate()
        {
            let err = res.unwrap_err();
            let msg = err.to_string();
            let named = match &err {
                DistError::Unresponsive { ranks, .. } => ranks.contains(&0),
                _ => msg.contains("MASTER_PORT"),
            };
            assert!(named, "{what}: rank {r}: {msg}");
            if r == 0 {
                assert!(msg.contains("holds the port"), "{what}: {msg}");
            }
            assert!(
                took < Duration::from_secs(4),
                "{what}: rank {r} took {took:?}"
            );
            worst = worst.max(took);
        }
        drop(stale);
    }
    println!("stale store: {trials} trials, every rank failed naming rank 0 or the held port; slowest {worst:?}");
}

//! A world of CPU-ring ranks in threads on 127.0.0.1, for tests (this crate's and the
//! trainer's): ephemeral ports, a fixed token, short deadlines. Helpers panic on setup failures,
//! as tests want.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Token;
use crate::init::{init_ring, DistOptions};
use crate::ring::RingComm;
use crate::world::{WorldInfo, WorldSource};

/// The token [`run_world`] uses.
const TEST_TOKEN: &str = "test-token";

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    crate::launch::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// Rank `rank` of a world of `n` whose rendezvous is `127.0.0.1:port`.
pub fn world(rank: usize, n: usize, port: u16) -> WorldInfo {
    WorldInfo {
        rank,
        world_size: n,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        source: WorldSource::Torchrun,
    }
}

/// Options with a collective deadline of `timeout_ms` and a 10 s rendezvous.
pub fn opts(timeout_ms: u64) -> DistOptions {
    DistOptions {
        timeout: Duration::from_millis(timeout_ms),
        rendezvous_timeout: Duration::from_secs(10),
        run_dir: None,
        ..DistOptions::default()
    }
}

/// Runs `f` on `n` ring ranks in threads and returns their results in rank order.
pub fn run_world<T: Send + 'static>(
    n: usize,
    timeout_ms: u64,
    f: impl Fn(usize, RingComm) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let port = free_port();
    let token = Token::new(TEST_TOKEN).unwrap_or_else(|e| panic!("{e}"));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|r| {
            let (f, token) = (f.clone(), token.clone());
            std::thread::spawn(move || {
                let comm = init_ring(&world(r, n, port), &token, &opts(timeout_ms))
                    .unwrap_or_else(|e| panic!("rank {r} could not join: {e}"));
                f(r, comm)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| panic!("a rank panicked")))
        .collect()
}

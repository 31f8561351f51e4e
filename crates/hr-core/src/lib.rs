//! hr-core: the few things every crate and binary of the workspace shares, at the bottom of the
//! dependency graph (it depends on no other workspace crate).
//!
//! - [`fs::write_atomic`]: the one atomic write (temp file, fsync, rename, directory fsync)
//!   behind every checkpoint, manifest, ledger and result file;
//! - [`EXIT_REQUEUE`]: the exit code of a preempted training job;
//! - [`rng`]: the SplitMix64 generator behind data order, synthetic data, initialisation and
//!   dropout masks;
//! - [`init_logging`]: the `tracing` setup of every binary;
//! - [`env_or`]: a numeric setting from the environment (benchmark sizes, test tolerances).

#![forbid(unsafe_code)]

pub mod fs;
pub mod rng;

pub use fs::{sync_dir, write_atomic, AtomicWriteError};
pub use rng::{mix64, mix_seed, Rng};

/// Exit code of a training job that stopped on a preemption signal after checkpointing:
/// `EX_TEMPFAIL`, which the sweep coordinator and the Slurm templates requeue.
pub const EXIT_REQUEUE: i32 = 75;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), with colour codes
/// only on a terminal so that logs redirected to files stay plain text. Call once, first thing
/// in `main`.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// The value of the environment variable `var` parsed as a `T`, or `default` when it is unset
/// or does not parse.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

//! hr-core: the few things every crate and binary of the workspace shares, at the bottom of the
//! dependency graph (it depends on no other workspace crate).
//!
//! - [`fs::write_atomic`]: the one atomic write (temp file, fsync, rename, directory fsync)
//!   behind every checkpoint, manifest and result file, and [`fs::append_durable`] for journals;
//!   [`faults`] injects a full disk into both for the reliability tests;
//! - [`EXIT_REQUEUE`]: the exit code of a preempted training job;
//! - [`rng`]: the SplitMix64 generator behind data order, synthetic data, initialisation and
//!   dropout masks;
//! - [`cli::start`]: the command line of every tool with subcommands (`--log-format`);
//!   [`init_logging`]: the `tracing` setup of every binary; [`Progress`]: progress of long work
//!   (a bar on a terminal, a log line every 30 s in batch jobs);
//! - [`env_or`]: a numeric setting from the environment (benchmark sizes, test tolerances);
//!   [`testing::assert_mentions`]: the tests' check that a message names what it should.

#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod faults;
pub mod fs;
pub mod progress;
pub mod rng;
pub mod testing;

pub use fs::{append_durable, remove_stale_temporaries, sync_dir, write_atomic, FileError};
pub use progress::Progress;
pub use rng::{mix64, mix_seed, Rng};

/// Runs `f`, turning a panic inside it into `Err` with the panic's message. The boundary
/// between our typed errors and dependencies that may panic on hostile input (decoders, the
/// Parquet reader, the tokenizer and safetensors parsers): the callers wrap each such call and
/// name the input in the error they return.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Exit code of a training job that stopped on a preemption signal after checkpointing:
/// `EX_TEMPFAIL`, which the sweep coordinator and the Slurm templates requeue.
pub const EXIT_REQUEUE: i32 = 75;

/// The log filter when `RUST_LOG` is not set: this project's crates at `info`, every dependency
/// at `warn` (their per-file chatter stays out of batch-job logs).
pub const DEFAULT_LOG_FILTER: &str = "warn,hr_core=info,hr_tensor=info,hr_nn=info,hr_text=info,\
hr_models=info,hr_data=info,hr_dist=info,hr_train=info,hr_eval=info,hr_sweep=info";

/// The variable that picks the log format: `json` writes one JSON object per line (for log
/// shippers), anything else the human-readable text.
pub const LOG_FORMAT_VAR: &str = "HR_LOG_FORMAT";

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]),
/// as text (colour codes only on a terminal, so logs redirected to files stay plain) or as
/// JSON lines: `format` is a binary's `--log-format` (`text` or `json`), else `HR_LOG_FORMAT`
/// decides. Call once, first thing in `main`; a process that knows its rank enters a `rank`
/// span so that every line it logs carries it.
pub fn init_logging(format: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let chosen = format
        .map(str::to_string)
        .or_else(|| std::env::var(LOG_FORMAT_VAR).ok());
    let json = chosen.is_some_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        fmt.json().with_span_list(true).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// The value of the environment variable `var` parsed as a `T`, or `default` when it is unset
/// or does not parse.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else "unknown"):
/// what lock files and event-file names record.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

//! Typed errors of hr-dist. Every error names the variable, the rank or the operation involved.

use std::time::Duration;

/// Result alias used throughout hr-dist.
pub type Result<T> = std::result::Result<T, DistError>;

/// Everything that can go wrong in world discovery, rendezvous, collectives and launching.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// An environment variable is missing or malformed.
    #[error("environment variable {var}: {msg}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An I/O error outside of a peer connection (files, binding, spawning).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Authentication with the store or a peer failed (wrong or missing token).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A peer rank died or its connection dropped.
    #[error("lost rank {rank} during {op}: {reason}")]
    PeerLost {
        /// The rank that was lost.
        rank: usize,
        /// The operation that noticed it.
        op: String,
        /// What was observed.
        reason: String,
    },
    /// A peer rank sent something the protocol never sends: a malformed frame, one that failed
    /// authentication, or a collective out of order.
    #[error("rank {rank} broke the protocol during {op}: {reason}")]
    BadPeer {
        /// The rank whose frames were refused.
        rank: usize,
        /// The operation that noticed it.
        op: String,
        /// What was refused.
        reason: String,
    },
    /// One or more ranks stopped responding within the deadline.
    #[error("rank(s) {ranks:?} did not respond within {after:?} during {op}")]
    Unresponsive {
        /// The ranks suspected of hanging.
        ranks: Vec<usize>,
        /// The operation that timed out.
        op: String,
        /// The configured deadline.
        after: Duration,
    },
    /// A store request timed out (e.g. `wait` for a key nobody set).
    #[error("store: timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The peers disagree about the protocol (different op order, world size, malformed frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An invalid argument (bad root, bad buffer length, bad world).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A collective backend cannot run on this machine (no CUDA driver or device, no NCCL
    /// library); the reason says what is missing and how to provide it.
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// The backend, e.g. `"nccl"`.
        backend: &'static str,
        /// What is missing.
        reason: String,
    },
    /// An NCCL (or CUDA, for `call = "cuda"`) call failed without a peer to blame.
    #[error("{call} failed during {op}: {msg}")]
    Nccl {
        /// The failing call, e.g. `ncclCommInitRankConfig`.
        call: &'static str,
        /// The collective or phase, e.g. `all_reduce #12` or `init`.
        op: String,
        /// NCCL's error string and last-error message.
        msg: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] hr_tensor::Error),
    /// A launched rank exited unsuccessfully.
    #[error("rank {rank} failed: {status}")]
    RankFailed {
        /// The rank that failed first.
        rank: usize,
        /// Its exit status, e.g. `exit status: 3` or `signal: 9 (SIGKILL)`.
        status: std::process::ExitStatus,
    },
}

impl DistError {
    /// Builds an [`DistError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DistError::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`DistError::Env`].
    pub fn env(var: &str, msg: impl Into<String>) -> Self {
        DistError::Env {
            var: var.to_string(),
            msg: msg.into(),
        }
    }
}

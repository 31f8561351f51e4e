//! The ledger: an append-only JSON-lines journal, one fsync per event, owned by the one
//! coordinator process that holds its lock. Replaying it gives the state of every job; a torn
//! last line (a crash while appending) is dropped and truncated away on the next open.
//! Jobs never write here: they report through files in their own run directories.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};

/// The ledger file name inside the runs directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";
const LOCK_FILE: &str = "ledger.lock";
/// Attempts, 100 ms apart, before a held ledger lock is reported.
const LOCK_GRACE_TRIES: u32 = 20;

/// Which job of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `hr-train`.
    Train,
    /// `hr-eval` on every evaluation set of the run.
    Eval,
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted (intent recorded, or queued by the scheduler).
    Pending,
    /// Running.
    Running,
    /// Finished successfully (its result file exists).
    Done,
    /// Failed for good (reason recorded).
    Failed,
    /// Stopped after a checkpoint (preempted / requeue exit); will be resubmitted.
    Preempted,
}

impl JobState {
    /// Done or failed.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Preempted => "preempted",
        }
    }
}

/// How the backend knows a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handle {
    /// A local process (the job wrapper's pid).
    Local {
        /// Process id.
        pid: u32,
    },
    /// A Slurm job id (`123` or `123_4` for an array task).
    Slurm {
        /// Job id.
        job_id: String,
    },
}

/// The Slurm job name of a submission (and the array task index of the run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmName {
    /// `--job-name`.
    pub name: String,
    /// Array task index, for array jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A `launch` started: the plan it launched.
    Sweep {
        /// The sweep file.
        file: String,
        /// The plan hash.
        plan_hash: String,
        /// Every run id of the plan.
        runs: Vec<String>,
        /// Backend name.
        backend: String,
    },
    /// A job is about to be submitted (written before the submission).
    Submit {
        /// Run id.
        run: String,
        /// Which job.
        job: JobKind,
        /// Attempt number (1-based).
        attempt: u32,
        /// Slurm: the job name it is submitted under and its array task index, so a coordinator
        /// that died inside `sbatch` can find the job again instead of submitting it twice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slurm: Option<SlurmName>,
    },
    /// Forget a run's jobs (`launch --retry-failed`): it is launched again from scratch
    /// (training resumes from its newest checkpoint).
    Retry {
        /// Run id.
        run: String,
    },
    /// A job's state changed.
    State {
        /// Run id.
        run: String,
        /// Which job.
        job: JobKind,
        /// New state.
        state: JobState,
        /// The backend handle, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handle: Option<Handle>,
        /// Why (failures: exit status and log tail).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A journal line: sequence number, time and the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    seq: u64,
    ts: u64,
    #[serde(flatten)]
    event: Event,
}

/// The folded state of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Attempts so far.
    pub attempt: u32,
    /// Current state.
    pub state: JobState,
    /// Backend handle of the current attempt.
    pub handle: Option<Handle>,
    /// Reason of the last state change.
    pub reason: Option<String>,
    /// Slurm job name of the current attempt.
    pub slurm: Option<SlurmName>,
}

impl JobRecord {
    /// Whether the submission was recorded without the backend's handle (the coordinator died
    /// inside the submission): it may or may not have reached the scheduler.
    pub fn unrecorded(&self) -> bool {
        self.state == JobState::Pending && self.handle.is_none()
    }
}

/// Everything the ledger says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    /// Plan hash, sweep file and run ids of the latest launch (the sweep's identity).
    pub last_plan: Option<(String, String, Vec<String>)>,
    /// (run id, job) -> record.
    pub jobs: BTreeMap<(String, JobKind), JobRecord>,
    /// Events replayed.
    pub events: u64,
}

impl LedgerState {
    /// The record of a job.
    pub fn job(&self, run: &str, job: JobKind) -> Option<&JobRecord> {
        self.jobs.get(&(run.to_string(), job))
    }

    /// Of the runs with ids `runs`: how many are done (evaluated) and how many failed
    /// (training or evaluation).
    pub fn done_and_failed<'a>(&self, runs: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
        let st = |r: &str, j| self.job(r, j).map(|x| x.state);
        let (mut done, mut failed) = (0, 0);
        for r in runs {
            done += usize::from(st(r, JobKind::Eval) == Some(JobState::Done));
            failed += usize::from(
                st(r, JobKind::Train) == Some(JobState::Failed)
                    || st(r, JobKind::Eval) == Some(JobState::Failed),
            );
        }
        (done, failed)
    }

    fn apply(&mut self, ev: &Event) {
        self.events += 1;
        match ev {
            Event::Sweep {
                plan_hash,
                runs,
                file,
                ..
            } => {
                self.last_plan = Some((plan_hash.clone(), file.clone(), runs.clone()));
            }
            Event::Retry { run } => {
                self.jobs.retain(|(r, _), _| r != run);
            }
            Event::Submit {
                run,
                job,
                attempt,
                slurm,
            } => {
                let rec = JobRecord {
                    attempt: *attempt,
                    state: JobState::Pending,
                    handle: None,
                    reason: None,
                    slurm: slurm.clone(),
                };
                self.jobs.insert((run.clone(), *job), rec);
            }
            Event::State {
                run,
                job,
                state,
                handle,
                reason,
            } => {
                let rec = self.jobs.entry((run.clone(), *job)).or_insert(JobRecord {
                    attempt: 0,
                    state: *state,
                    handle: None,
                    reason: None,
                    slurm: None,
                });
                rec.state = *state;
                if handle.is_some() {
                    rec.handle = handle.clone();
                }
                rec.reason = reason.clone();
            }
        }
    }
}

/// The open, locked ledger of a runs directory.
pub struct Ledger {
    path: PathBuf,
    file: File,
    _lock: LockFile,
    seq: u64,
    /// The replayed state, kept current by [`Ledger::append`].
    pub state: LedgerState,
}

impl Ledger {
    /// Opens (creating) the ledger of `runs_dir`, taking its lock; fails when another
    /// coordinator holds it.
    pub fn open(runs_dir: &Path) -> Result<Ledger> {
        std::fs::create_dir_all(runs_dir).map_err(SweepError::io(runs_dir))?;
        let lock = LockFile::acquire(runs_dir)?;
        let path = runs_dir.join(LEDGER_FILE);
        let (state, seq, good_len) = replay(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(SweepError::io(&path))?;
        file.set_len(good_len).map_err(SweepError::io(&path))?;
        hr_core::sync_dir(runs_dir)?;
        Ok(Ledger {
            path,
            file,
            _lock: lock,
            seq,
            state,
        })
    }

    /// Reads the ledger of `runs_dir` without locking (for `status`, `plan` and `report`).
    pub fn read(runs_dir: &Path) -> Result<LedgerState> {
        Ok(replay(&runs_dir.join(LEDGER_FILE))?.0)
    }

    /// Appends one event durably (write + fsync) and applies it.
    pub fn append(&mut self, event: Event) -> Result<()> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = Line {
            seq: self.seq + 1,
            ts,
            event,
        };
        let mut text = serde_json::to_string(&line)
            .map_err(|e| SweepError::format(self.path.clone(), e.to_string()))?;
        text.push('\n');
        hr_core::append_durable(&mut self.file, &self.path, text.as_bytes())?;
        self.seq += 1;
        self.state.apply(&line.event);
        Ok(())
    }
}

/// Replays a journal: (state, last seq, length of the well-formed prefix).
fn replay(path: &Path) -> Result<(LedgerState, u64, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(SweepError::io(path)(e)),
    };
    let mut state = LedgerState::default();
    let (mut seq, mut good) = (0u64, 0usize);
    let mut start = 0usize;
    while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
        let raw = &bytes[start..start + nl];
        let line: Line = match serde_json::from_slice(raw) {
            Ok(l) => l,
            Err(e) => {
                let is_last = start + nl + 1 >= bytes.len();
                if is_last {
                    break;
                }
                let msg = format!("corrupt ledger line after seq {seq}: {e}");
                return Err(SweepError::format(path.to_path_buf(), msg));
            }
        };
        state.apply(&line.event);
        seq = line.seq;
        start += nl + 1;
        good = start;
    }
    if good < bytes.len() {
        tracing::warn!(path = %path.display(), bytes = bytes.len() - good, "dropping a torn ledger tail");
    }
    Ok((state, seq, good as u64))
}

/// The coordinator lock: an exclusive OS lock (`flock`) on `ledger.lock`, which holds the owner's
/// host name and pid. The OS releases it when the coordinator exits, however it exits, so
/// there is no stale lock to take over; a lock held by a running coordinator (on this host or
/// another one sharing the file system) is reported with its owner and never stolen.
struct LockFile {
    _file: File,
}

impl LockFile {
    fn acquire(runs_dir: &Path) -> Result<LockFile> {
        let path = runs_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(SweepError::io(&path))?;
        // A coordinator that has just exited can leave the lock held for a moment by a job
        // it was starting (a forked child before its exec closes the descriptor): a short
        // grace before reporting the holder.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < LOCK_GRACE_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(SweepError::Locked {
                        ledger: runs_dir.join(LEDGER_FILE),
                        owner: owner_text(&owner),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(SweepError::io(&path)(e)),
            }
        }
        let me = format!("{} {}\n", hr_core::host_name(), std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(me.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(SweepError::io(&path))?;
        Ok(LockFile { _file: file })
    }
}

/// `hr-sweep on HOST (pid PID)` from a lock file's `HOST PID` line.
fn owner_text(content: &str) -> String {
    match content.split_whitespace().collect::<Vec<_>>()[..] {
        [host, pid] => format!("hr-sweep on {host} (pid {pid})"),
        _ => "another hr-sweep process (owner not recorded yet)".into(),
    }
}

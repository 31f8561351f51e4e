//! Progress of long work (dataset preparation, verification, evaluation): a live bar on a
//! terminal; elsewhere (batch jobs have no TTY) an `info` log line every
//! [`PROGRESS_EVERY_VAR`] seconds (default 30) with the count, the rate and the time left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between progress lines when stderr is not a terminal.
pub const PROGRESS_EVERY_VAR: &str = "HR_PROGRESS_EVERY_S";

/// A progress counter shared by the threads doing the work.
pub struct Progress {
    what: String,
    unit: &'static str,
    total: u64,
    done: AtomicU64,
    start: Instant,
    /// A live bar (terminal), or the time of the last line (log mode).
    view: View,
}

enum View {
    Bar(ProgressBar),
    Lines {
        every: Duration,
        last: Mutex<Instant>,
    },
}

impl Progress {
    /// Progress of `what`, counting `unit`s out of `total` (0: unknown).
    pub fn new(what: &str, unit: &'static str, total: u64) -> Progress {
        let view = match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            true => View::Bar(bar(what, unit, total)),
            false => View::Lines {
                every: every(),
                last: Mutex::new(Instant::now()),
            },
        };
        Progress {
            what: what.into(),
            unit,
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            view,
        }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.view {
            View::Bar(b) => b.inc(n),
            View::Lines { every, last } => {
                let Ok(mut last) = last.lock() else {
                    return;
                };
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    tracing::info!("{}", self.line(done));
                }
            }
        }
    }

    /// Ends the progress: clears the bar, or logs the final count.
    pub fn finish(&self) {
        match &self.view {
            View::Bar(b) => b.finish_and_clear(),
            View::Lines { .. } => {
                tracing::info!("{}", self.line(self.done.load(Ordering::Relaxed)))
            }
        }
    }

    /// `what: done/total unit (rate/s, ETA)`.
    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        match self.total {
            0 => format!("{}: {done} {} ({rate:.1}/s)", self.what, self.unit),
            total => {
                let left = total.saturating_sub(done) as f64 / rate.max(1e-9);
                format!(
                    "{}: {done}/{total} {} ({rate:.1}/s, {} left)",
                    self.what,
                    self.unit,
                    clock(left)
                )
            }
        }
    }
}

/// The interval of progress lines.
fn every() -> Duration {
    std::env::var(PROGRESS_EVERY_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// `h:mm:ss` of a number of seconds.
fn clock(secs: f64) -> String {
    let s = secs.round().min(u32::MAX as f64) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn bar(what: &str, unit: &str, total: u64) -> ProgressBar {
    let (pb, template) = match total {
        0 => (
            ProgressBar::no_length(),
            format!("{{spinner}} {{msg}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}})"),
        ),
        n => (
            ProgressBar::new(n),
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})".to_string(),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_count_rate_and_time_left() {
        let p = Progress {
            what: "verify".into(),
            unit: "rows",
            total: 100,
            done: AtomicU64::new(0),
            start: Instant::now() - Duration::from_secs(10),
            view: View::Lines {
                every: Duration::ZERO,
                last: Mutex::new(Instant::now()),
            },
        };
        let l = p.line(25);
        assert!(l.starts_with("verify: 25/100 rows (2."), "{l}");
        assert!(l.ends_with("0:00:30 left)"), "{l}");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}

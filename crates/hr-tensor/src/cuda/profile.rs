//! Per-kernel GPU time of a region of work: [`OpProfile::start`] makes every kernel launch,
//! cuBLAS call and host-to-device upload on that device's stream record a pair of CUDA events
//! around it; [`OpProfile::finish`] waits for the stream and sums the elapsed times per name.
//! The result says where a training step's GPU time goes and how much of the wall clock the
//! GPU was busy at all (the rest is launch overhead and host work between kernels).
//!
//! Off (the default) costs one relaxed atomic load per launch. One profile at a time per
//! process; work on other devices or streams is not recorded.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{sys as drv_sys, CudaEvent, CudaStream};

use crate::{Error, Result};

/// Whether a profile is being recorded (checked before taking the lock).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The recording profile.
static STATE: Mutex<Option<Recording>> = Mutex::new(None);

/// The events of the region being profiled.
struct Recording {
    stream: Arc<CudaStream>,
    marks: Vec<(&'static str, CudaEvent, CudaEvent)>,
}

fn err(op: &'static str, msg: impl fmt::Display) -> Error {
    Error::Cuda {
        op,
        msg: msg.to_string(),
    }
}

/// Runs `f` (which queues work on the profiled stream) between two timing events named `name`
/// when a profile is recording; just runs `f` otherwise.
pub(crate) fn around<T>(name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return f();
    }
    let start = record()?;
    let out = f()?;
    if let (Some(start), Some(end)) = (start, record()?) {
        if let Ok(mut g) = STATE.lock() {
            if let Some(r) = g.as_mut() {
                r.marks.push((name, start, end));
            }
        }
    }
    Ok(out)
}

/// A timing event recorded now on the profiled stream (None once the profile has ended).
fn record() -> Result<Option<CudaEvent>> {
    let g = STATE
        .lock()
        .map_err(|_| err("profile", "profile lock poisoned"))?;
    let Some(r) = g.as_ref() else {
        return Ok(None);
    };
    r.stream
        .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map(Some)
        .map_err(|e| err("profile", format!("recording an event: {e}")))
}

/// A profile in progress on one device (see the module doc).
#[derive(Debug)]
pub struct OpProfile {
    stream: Arc<CudaStream>,
    start: CudaEvent,
    wall: Instant,
}

/// One kernel (or cuBLAS call, or upload) name's share of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// Kernel entry point, `cublas ...` or `upload`.
    pub name: &'static str,
    /// Number of calls.
    pub calls: usize,
    /// Summed GPU time of the calls, milliseconds.
    pub ms: f64,
}

/// The per-name GPU times of a profiled region, largest first.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    /// One row per name, sorted by time (descending).
    pub rows: Vec<ProfileRow>,
    /// Milliseconds from the first to the last event of the region on the GPU.
    pub gpu_span_ms: f64,
    /// Host wall-clock milliseconds from `start` to the end of `finish` (includes the wait).
    pub wall_ms: f64,
}

impl OpProfile {
    /// Starts recording on device `ordinal`'s stream; an error when a profile is already
    /// recording.
    pub fn start(ordinal: usize) -> Result<OpProfile> {
        let dev = super::context(ordinal)?;
        let mut g = STATE
            .lock()
            .map_err(|_| err("profile", "profile lock poisoned"))?;
        if g.is_some() {
            return Err(err("profile", "a profile is already recording"));
        }
        let start = dev
            .stream
            .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| err("profile", format!("recording the start event: {e}")))?;
        *g = Some(Recording {
            stream: dev.stream.clone(),
            marks: Vec::new(),
        });
        ACTIVE.store(true, Ordering::Relaxed);
        Ok(OpProfile {
            stream: dev.stream.clone(),
            start,
            wall: Instant::now(),
        })
    }

    /// Stops recording, waits for the stream and sums the recorded times per name.
    pub fn finish(self) -> Result<ProfileReport> {
        ACTIVE.store(false, Ordering::Relaxed);
        let rec = STATE
            .lock()
            .map_err(|_| err("profile", "profile lock poisoned"))?
            .take();
        let end = self
            .stream
            .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| err("profile", format!("recording the end event: {e}")))?;
        let elapsed = |a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b)
                .map(f64::from)
                .map_err(|e| err("profile", format!("reading an event: {e}")))
        };
        let gpu_span_ms = elapsed(&self.start, &end)?;
        let wall_ms = self.wall.elapsed().as_secs_f64() * 1e3;
        let mut sums: HashMap<&'static str, (usize, f64)> = HashMap::new();
        for (name, a, b) in rec.map(|r| r.marks).unwrap_or_default() {
            let e = sums.entry(name).or_default();
            e.0 += 1;
            e.1 += elapsed(&a, &b)?;
        }
        let mut rows: Vec<ProfileRow> = sums
            .into_iter()
            .map(|(name, (calls, ms))| ProfileRow { name, calls, ms })
            .collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.name.cmp(b.name)));
        Ok(ProfileReport {
            rows,
            gpu_span_ms,
            wall_ms,
        })
    }
}

impl Drop for OpProfile {
    /// Stops recording when the profile is dropped without [`OpProfile::finish`] (an error in
    /// the profiled work), so the next profile can start.
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Relaxed);
        if let Ok(mut g) = STATE.lock() {
            g.take();
        }
    }
}

impl ProfileReport {
    /// Summed GPU time of every recorded call, milliseconds.
    pub fn busy_ms(&self) -> f64 {
        self.rows.iter().map(|r| r.ms).sum()
    }

    /// Total number of recorded calls.
    pub fn calls(&self) -> usize {
        self.rows.iter().map(|r| r.calls).sum()
    }

    /// A Markdown table of the `top` largest rows plus the totals.
    pub fn table(&self, top: usize) -> String {
        let busy = self.busy_ms().max(f64::MIN_POSITIVE);
        let mut s =
            String::from("| kernel / call | calls | GPU ms | share |\n|---|---:|---:|---:|\n");
        for r in self.rows.iter().take(top) {
            s += &format!(
                "| {} | {} | {:.3} | {:.1} % |\n",
                r.name,
                r.calls,
                r.ms,
                100.0 * r.ms / busy
            );
        }
        let rest: f64 = self.rows.iter().skip(top).map(|r| r.ms).sum();
        if self.rows.len() > top {
            s += &format!(
                "| ({} more names) | {} | {rest:.3} | {:.1} % |\n",
                self.rows.len() - top,
                self.rows.iter().skip(top).map(|r| r.calls).sum::<usize>(),
                100.0 * rest / busy
            );
        }
        s += &format!(
            "| **busy (sum of calls)** | {} | {:.3} | 100 % |\n| GPU span (first to last event) | | {:.3} | |\n| host wall clock | | {:.3} | |\n",
            self.calls(),
            self.busy_ms(),
            self.gpu_span_ms,
            self.wall_ms
        );
        s
    }
}

//! Host-to-device copies that run beside the compute stream: the trainer uploads the next
//! batch's waveforms while the current step's kernels run.
//!
//! Ordering, with the device's compute stream `C` and its copy stream `K` (no cudarc event
//! tracking on this context, so every dependency is an explicit event):
//! 1. the destination is allocated on `C` (stream-ordered; `C` frees it after its last use);
//! 2. `K` waits for an event recorded on `C` right after the allocation;
//! 3. the host data is copied into a page-locked staging buffer (whose previous copy out has
//!    finished: cudarc's pinned buffer waits for it) and `K` copies it to the destination;
//! 4. an event recorded on `K` after the copy is returned; [`Pending::ready`] makes `C` wait for
//!    it (no host wait) before the tensor's first use.
//!
//! Issued before the current step's kernels are queued, the copy overlaps that step.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice};

use super::{context, launch, CudaDevice, CudaStorage};
use crate::{Error, Result};

/// The copy stream of a device and its staging buffer.
#[derive(Debug)]
pub(crate) struct CopyLane {
    stream: Arc<CudaStream>,
    staging: Option<PinnedHostSlice<f32>>,
}

/// A copy in flight on a device's copy stream.
#[derive(Debug)]
pub struct Pending {
    ordinal: usize,
    done: CudaEvent,
}

impl Pending {
    /// Orders the device's compute stream after the copy (returns at once).
    pub fn ready(&self) -> Result<()> {
        let dev = context(self.ordinal)?;
        dev.stream.wait(&self.done).map_err(|e| Error::Cuda {
            op: "upload_ahead",
            msg: format!("waiting for the copy stream: {e}"),
        })
    }
}

fn lane_err(e: cudarc::driver::DriverError) -> Error {
    Error::Cuda {
        op: "upload_ahead",
        msg: e.to_string(),
    }
}

fn new_lane(dev: &CudaDevice) -> Result<CopyLane> {
    Ok(CopyLane {
        stream: dev.ctx.new_stream().map_err(lane_err)?,
        staging: None,
    })
}

/// Starts copying host f32 `data` to a new buffer on `ordinal` on the copy stream (see the
/// module documentation); returns the buffer and the copy's completion.
pub fn upload_f32_ahead(ordinal: usize, data: &[f32]) -> Result<(CudaStorage, Pending)> {
    let dev = context(ordinal)?;
    let mut guard = dev.copy_lane.lock().map_err(|_| Error::Cuda {
        op: "upload_ahead",
        msg: "copy lane lock poisoned".into(),
    })?;
    let lane = match &mut *guard {
        Some(lane) => lane,
        slot => slot.insert(new_lane(&dev)?),
    };
    let mut dst = launch::alloc_f32(&dev, data.len(), "upload_ahead")?;
    let allocated = dev.stream.record_event(None).map_err(lane_err)?;
    lane.stream.wait(&allocated).map_err(lane_err)?;
    if lane
        .staging
        .as_ref()
        .is_none_or(|s| s.len() != data.len().max(1))
    {
        // SAFETY: f32 is plain data; the buffer is fully written below before any copy reads it.
        let buf = unsafe { dev.ctx.alloc_pinned::<f32>(data.len().max(1)) }.map_err(lane_err)?;
        lane.staging = Some(buf);
    }
    if let Some(pinned) = lane.staging.as_mut() {
        // Waits until the previous copy out of this buffer has finished, then refills it.
        pinned.as_mut_slice().map_err(lane_err)?[..data.len()].copy_from_slice(data);
        lane.stream
            .memcpy_htod(&*pinned, &mut dst)
            .map_err(lane_err)?;
    }
    let done = lane.stream.record_event(None).map_err(lane_err)?;
    Ok((CudaStorage::F32(dst), Pending { ordinal, done }))
}

//! TensorBoard event files: `RUN/tensorboard/events.out.tfevents.<time>.<host>.<pid>` holds the
//! run's scalars (loss, learning rate per group, items/s, validation metrics), so
//! `tensorboard --logdir runs/` shows a whole sweep.
//!
//! The format is written directly (it is small and stable): TFRecord framing (little-endian
//! `u64` length, masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes) around
//! `tensorflow.Event` protocol buffers: `wall_time` (field 1, double), `step` (2, int64),
//! `file_version` (3, string, first record only) and `summary` (5) holding `Summary.Value`s of
//! `tag` (1, string) and `simple_value` (2, float).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The folder inside a run directory.
pub const TB_DIR: &str = "tensorboard";

/// Appends scalar events to one event file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates a new event file in `RUN/tensorboard/` (one per start of the run: TensorBoard
    /// reads every file of the folder in order).
    pub fn create(run: &Path) -> Result<EventWriter> {
        let dir = run.join(TB_DIR);
        std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        let host = hr_core::host_name();
        let secs = now().floor() as u64;
        let path = dir.join(format!(
            "events.out.tfevents.{secs}.{host}.{}",
            std::process::id()
        ));
        let file = File::create(&path).map_err(TrainError::io(&path))?;
        let mut w = EventWriter { path, file };
        let mut ev = Vec::new();
        put_double(&mut ev, 1, now());
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        Ok(w)
    }

    /// Writes scalars `(tag, value)` at `step`, as one event.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            put_key(&mut value, 2, 5);
            value.extend_from_slice(&(*v as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &value);
        }
        let mut ev = Vec::new();
        put_double(&mut ev, 1, now());
        put_key(&mut ev, 2, 0);
        put_varint(&mut ev, step);
        put_bytes(&mut ev, 5, &summary);
        self.record(&ev)
    }

    /// One TFRecord, flushed to the OS so that TensorBoard sees it while the run goes on.
    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file
            .write_all(&buf)
            .map_err(TrainError::io(&self.path))
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(buf, (field << 3) | wire);
}

fn put_double(buf: &mut Vec<u8>, field: u64, v: f64) {
    put_key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one byte at a time through a table.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}

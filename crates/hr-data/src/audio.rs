//! Audio decoding (symphonia), down-mixing, resampling (rubato), crop/pad and wav encoding (hound).

use std::io::Cursor;

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::error::{DataError, Result};

/// The model's sample rate.
pub const TARGET_SR: u32 = 32_000;

/// Decoded mono audio at its native rate.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoAudio {
    /// Samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
}

impl MonoAudio {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f32 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.samples.len() as f32 / self.sample_rate as f32
    }
}

fn undecodable(origin: &str, detail: impl std::fmt::Display) -> DataError {
    DataError::Undecodable {
        origin: origin.to_string(),
        detail: detail.to_string(),
    }
}

/// Decodes an encoded file (wav, flac, ogg/vorbis, mp3) and averages its channels to mono.
///
/// `name` is a file-name hint (its extension helps probing); `origin` names the blob in errors.
pub fn decode_mono(bytes: &[u8], name: &str, origin: &str) -> Result<MonoAudio> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
    {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| undecodable(origin, e))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| undecodable(origin, "no audio track"))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| undecodable(origin, "track has no audio codec parameters"))?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| undecodable(origin, e))?;
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut out: Vec<f32> = Vec::new();
    let mut planes: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(undecodable(origin, e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(undecodable(origin, e)),
        };
        rate = buf.spec().rate();
        buf.copy_to_vecs_planar(&mut planes);
        mix_into(&planes, buf.frames(), &mut out);
    }
    if rate == 0 {
        return Err(undecodable(origin, "unknown sample rate"));
    }
    if out.is_empty() {
        return Err(undecodable(origin, "no audio frames decoded"));
    }
    Ok(MonoAudio {
        samples: out,
        sample_rate: rate,
    })
}

fn mix_into(planes: &[Vec<f32>], frames: usize, out: &mut Vec<f32>) {
    let ch = planes.len().max(1);
    let scale = 1.0 / ch as f32;
    out.reserve(frames);
    for i in 0..frames {
        let s: f32 = planes
            .iter()
            .map(|p| p.get(i).copied().unwrap_or(0.0))
            .sum();
        out.push(s * scale);
    }
}

/// Resamples mono audio to `target` Hz (FFT resampler; identity when rates match).
///
/// Planning the FFTs is cheap next to the transform (measured: 17 ms per 10 s clip either way), so
/// a resampler is built per call.
pub fn resample(audio: &MonoAudio, target: u32, origin: &str) -> Result<Vec<f32>> {
    if audio.sample_rate == target || audio.samples.is_empty() {
        return Ok(audio.samples.clone());
    }
    let n = audio.samples.len();
    let mut r = Fft::<f32>::new(
        audio.sample_rate as usize,
        target as usize,
        1024,
        1,
        FixedSync::Both,
    )
    .map_err(|e| undecodable(origin, format!("resampler: {e}")))?;
    let input = SequentialSlice::new(&audio.samples, 1, n)
        .map_err(|e| undecodable(origin, format!("resampler input: {e}")))?;
    let out = r
        .process_all(&input, n, None)
        .map_err(|e| undecodable(origin, format!("resampling: {e}")))?;
    Ok(out.take_data())
}

/// Crops (at `offset`) or zero-pads `samples` to exactly `len`; returns the valid length.
pub fn crop_or_pad(samples: &[f32], len: usize, offset: usize) -> (Vec<f32>, usize) {
    if samples.len() >= len {
        let start = offset.min(samples.len() - len);
        (samples[start..start + len].to_vec(), len)
    } else {
        let mut v = samples.to_vec();
        let valid = v.len();
        v.resize(len, 0.0);
        (v, valid)
    }
}

/// Decodes, down-mixes and resamples an encoded blob to [`TARGET_SR`] mono.
pub fn load_32k(bytes: &[u8], name: &str, origin: &str) -> Result<Vec<f32>> {
    let mono = decode_mono(bytes, name, origin)?;
    resample(&mono, TARGET_SR, origin)
}

/// Encodes mono f32 samples as a 16-bit PCM wav file in memory.
pub fn encode_wav16(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>> {
    encode_wav(&[samples.to_vec()], sample_rate, 16)
}

/// Encodes planar channels as PCM wav with 16 or 24 bits per sample.
pub fn encode_wav(channels: &[Vec<f32>], sample_rate: u32, bits: u16) -> Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let wav_err = |e: hound::Error| DataError::Config(format!("wav encoding: {e}"));
    let mut cur = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cur, spec).map_err(wav_err)?;
        let frames = channels.iter().map(Vec::len).max().unwrap_or(0);
        let max = ((1i64 << (bits - 1)) - 1) as f32;
        for i in 0..frames {
            for ch in channels {
                let s = ch.get(i).copied().unwrap_or(0.0).clamp(-1.0, 1.0);
                let v = (s * max).round() as i32;
                if bits == 16 {
                    w.write_sample(v as i16).map_err(wav_err)?;
                } else {
                    w.write_sample(v).map_err(wav_err)?;
                }
            }
        }
        w.finalize().map_err(wav_err)?;
    }
    Ok(cur.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, sr: u32, secs: f32) -> Vec<f32> {
        (0..(sr as f32 * secs) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / sr as f32).sin())
            .collect()
    }

    #[test]
    fn wav16_roundtrip_and_resample_44k1_stereo() {
        let x = sine(440.0, 44_100, 0.5);
        let wav = encode_wav(&[x.clone(), x.clone()], 44_100, 16).unwrap();
        let mono = decode_mono(&wav, "a.wav", "test").unwrap();
        assert_eq!(mono.sample_rate, 44_100);
        assert_eq!(mono.samples.len(), x.len());
        assert!((mono.samples[100] - x[100]).abs() < 1e-3);
        let y = resample(&mono, TARGET_SR, "test").unwrap();
        let expect = (x.len() as f64 * 32_000.0 / 44_100.0).round() as i64;
        assert!(
            (y.len() as i64 - expect).abs() <= 2,
            "{} vs {expect}",
            y.len()
        );
    }

    #[test]
    fn wav24_decodes() {
        let x = sine(1000.0, 48_000, 0.2);
        let wav = encode_wav(std::slice::from_ref(&x), 48_000, 24).unwrap();
        let mono = decode_mono(&wav, "b.wav", "test").unwrap();
        assert_eq!(mono.samples.len(), x.len());
        assert!((mono.samples[50] - x[50]).abs() < 1e-4);
    }

    #[test]
    fn garbage_is_undecodable_with_origin() {
        let err = decode_mono(b"not audio at all", "x.wav", "shard s, row 3").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("shard s, row 3")
                && msg.contains("--on-bad-audio skip")
                && msg.contains("data.bad_rows"),
            "{msg}"
        );
    }

    #[test]
    fn crop_and_pad() {
        let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let (c, n) = crop_or_pad(&v, 4, 3);
        assert_eq!((c, n), (vec![3.0, 4.0, 5.0, 6.0], 4));
        let (p, n) = crop_or_pad(&v, 12, 0);
        assert_eq!(n, 10);
        assert_eq!(p.len(), 12);
        assert_eq!(p[11], 0.0);
        let (c, _) = crop_or_pad(&v, 4, 100);
        assert_eq!(c[0], 6.0);
    }
}

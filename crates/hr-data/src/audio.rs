//! Audio decoding (symphonia, plus a direct PCM path for wav), down-mixing, resampling (rubato),
//! crop/pad, crop decoding and wav encoding (hound).

use std::io::Cursor;
use std::ops::Range;

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::Timestamp;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::schema::AudioBlob;

/// The model's sample rate.
pub const TARGET_SR: u32 = 32_000;

/// The codec prepared audio is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// 16-bit PCM wav, mono (64 kB per second at 32 kHz; read without decompression).
    #[default]
    Wav,
    /// FLAC. No encoder in this build writes files symphonia reads back (the pure-Rust flacenc
    /// 0.5's output fails to probe in symphonia 0.6), so asking for it is an error.
    Flac,
    /// The source file's bytes as they are (any rate, any channel count).
    Original,
}

/// How a dataset's audio is stored: recorded in its manifest by `prepare` and `reencode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioStorage {
    /// Sample rate of every clip (None: each clip at its source's rate).
    pub sample_rate: Option<u32>,
    /// Codec of every clip.
    pub codec: Codec,
}

impl Default for AudioStorage {
    /// Mono 16-bit wav at the model's 32 kHz: the loader then decodes crops without resampling.
    fn default() -> Self {
        AudioStorage {
            sample_rate: Some(TARGET_SR),
            codec: Codec::Wav,
        }
    }
}

impl AudioStorage {
    /// Checks a `--codec` / `--sample-rate` choice: `original` keeps the source rate, `flac` has
    /// no encoder here, `wav` defaults to 32 kHz.
    pub fn new(codec: Codec, sample_rate: Option<u32>) -> Result<Self> {
        match codec {
            Codec::Flac => Err(DataError::Config(
                "--codec flac: this build has no FLAC encoder whose output symphonia and \
                 libsndfile both read back (flacenc 0.5's files do not probe in symphonia 0.6); \
                 use --codec wav (16-bit PCM at 32 kHz, read without any decompression)"
                    .into(),
            )),
            Codec::Original if sample_rate.is_some() => Err(DataError::Config(
                "--codec original keeps the source files and their rates; \
                 drop --sample-rate or use --codec wav to resample"
                    .into(),
            )),
            Codec::Original => Ok(AudioStorage {
                sample_rate: None,
                codec,
            }),
            Codec::Wav => Ok(AudioStorage {
                sample_rate: Some(sample_rate.unwrap_or(TARGET_SR)),
                codec,
            }),
        }
    }

    /// Stores one source file: checks that it decodes, then keeps its bytes or re-encodes it
    /// (down-mixed, resampled with the loader's resampler, 16-bit wav named `STEM.wav`).
    /// Returns the blob with its sample rate and duration.
    pub fn store(&self, bytes: Vec<u8>, name: &str, origin: &str) -> Result<(AudioBlob, u32, f32)> {
        let mono = decode_mono(&bytes, name, origin)?;
        let (rate, dur) = (mono.sample_rate, mono.duration_s());
        if self.codec == Codec::Original {
            let path = name.to_string();
            return Ok((AudioBlob { bytes, path }, rate, dur));
        }
        let target = self.sample_rate.unwrap_or(rate);
        let samples = resample(&mono, target, origin)?;
        let stem = std::path::Path::new(name)
            .file_stem()
            .map_or_else(|| name.to_string(), |s| s.to_string_lossy().to_string());
        let blob = AudioBlob {
            bytes: encode_wav16(&samples, target)?,
            path: format!("{stem}.wav"),
        };
        Ok((blob, target, samples.len() as f32 / target as f32))
    }
}

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
/// PCM wav (16/24/32-bit integer, 32-bit float) is read directly, with the same sample scaling
/// and channel averaging as symphonia; every other file goes through symphonia.
pub fn decode_mono(bytes: &[u8], name: &str, origin: &str) -> Result<MonoAudio> {
    guarded(origin, || decode_mono_unguarded(bytes, name, origin))
}

/// Runs a decoder; a panic inside it (symphonia, rubato on hostile bytes) becomes
/// [`DataError::Undecodable`] naming `origin`.
fn guarded<T>(origin: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    hr_core::catch_panic(f)
        .unwrap_or_else(|m| Err(undecodable(origin, format!("the decoder panicked: {m}"))))
}

fn decode_mono_unguarded(bytes: &[u8], name: &str, origin: &str) -> Result<MonoAudio> {
    match WavPcm::parse(bytes) {
        Some(wav) => Ok(MonoAudio {
            samples: wav.mono(0..wav.frames()),
            sample_rate: wav.sample_rate,
        }),
        None => decode_symphonia(bytes, name, origin),
    }
}

fn decode_symphonia(bytes: &[u8], name: &str, origin: &str) -> Result<MonoAudio> {
    let (format, track_id, params) = open_symphonia(bytes, name, origin)?;
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut packets = MonoPackets::new(format, track_id, &params, origin)?;
    let mut out: Vec<f32> = Vec::new();
    while let Some(r) = packets.mix_next(&mut out)? {
        rate = r;
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

/// The packets of one symphonia track, decoded and mixed down to mono one at a time.
struct MonoPackets<'a> {
    format: Box<dyn FormatReader>,
    track_id: u32,
    decoder: Box<dyn AudioDecoder>,
    planes: Vec<Vec<f32>>,
    origin: &'a str,
}

impl<'a> MonoPackets<'a> {
    fn new(
        format: Box<dyn FormatReader>,
        track_id: u32,
        params: &AudioCodecParameters,
        origin: &'a str,
    ) -> Result<Self> {
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| undecodable(origin, e))?;
        Ok(MonoPackets {
            format,
            track_id,
            decoder,
            planes: Vec::new(),
            origin,
        })
    }

    /// Decodes the track's next packet (skipping undecodable ones) and appends its mono mix to
    /// `out`; returns the packet's sample rate, `None` at the end of the stream.
    fn mix_next(&mut self, out: &mut Vec<f32>) -> Result<Option<u32>> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None)
                }
                Err(e) => return Err(undecodable(self.origin, e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(b) => b,
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return Err(undecodable(self.origin, e)),
            };
            buf.copy_to_vecs_planar(&mut self.planes);
            mix_into(&self.planes, buf.frames(), out);
            return Ok(Some(buf.spec().rate()));
        }
    }
}

type Opened = (Box<dyn FormatReader>, u32, AudioCodecParameters);

/// Probes `bytes` with symphonia: the format reader, its default audio track and codec parameters.
fn open_symphonia(bytes: &[u8], name: &str, origin: &str) -> Result<Opened> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
    {
        hint.with_extension(ext);
    }
    let format = symphonia::default::get_probe()
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
    Ok((format, track_id, params))
}

/// The sample layout of a PCM wav file this module decodes directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PcmFormat {
    I16,
    I24,
    I32,
    F32,
}

/// A PCM wav file: its layout and where its samples are.
#[derive(Debug, Clone)]
struct WavPcm<'a> {
    sample_rate: u32,
    channels: usize,
    format: PcmFormat,
    data: &'a [u8],
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> WavPcm<'a> {
    /// Parses a RIFF/WAVE header; `None` for anything but 16/24/32-bit integer or 32-bit
    /// float PCM (those go through symphonia, which reports what is wrong with them).
    fn parse(b: &'a [u8]) -> Option<Self> {
        if b.get(0..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
            return None;
        }
        let (mut at, mut fmt) = (12usize, None);
        while at + 8 <= b.len() {
            let id = &b[at..at + 4];
            let size = le_u32(b, at + 4)? as usize;
            let body = at + 8;
            if id == b"fmt " {
                fmt = Some(body);
            } else if id == b"data" {
                let f = fmt?;
                let end = body.checked_add(size)?.min(b.len());
                return Self::from_fmt(b, f, &b[body..end]);
            }
            at = body.checked_add(size)?.checked_add(size & 1)?;
        }
        None
    }

    fn from_fmt(b: &[u8], f: usize, data: &'a [u8]) -> Option<Self> {
        let mut tag = le_u16(b, f)?;
        if tag == 0xFFFE {
            // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag.
            tag = le_u16(b, f + 24)?;
        }
        let channels = le_u16(b, f + 2)? as usize;
        let sample_rate = le_u32(b, f + 4)?;
        let format = match (tag, le_u16(b, f + 14)?) {
            (1, 16) => PcmFormat::I16,
            (1, 24) => PcmFormat::I24,
            (1, 32) => PcmFormat::I32,
            (3, 32) => PcmFormat::F32,
            _ => return None,
        };
        (channels > 0 && sample_rate > 0 && !data.is_empty()).then_some(WavPcm {
            sample_rate,
            channels,
            format,
            data,
        })
    }

    fn bytes_per_sample(&self) -> usize {
        match self.format {
            PcmFormat::I16 => 2,
            PcmFormat::I24 => 3,
            PcmFormat::I32 | PcmFormat::F32 => 4,
        }
    }

    /// Whole frames in the data chunk.
    fn frames(&self) -> usize {
        self.data.len() / (self.bytes_per_sample() * self.channels)
    }

    /// One sample as f32, scaled as symphonia scales it.
    fn sample(&self, at: usize) -> f32 {
        let d = self.data;
        match self.format {
            PcmFormat::I16 => i16::from_le_bytes([d[at], d[at + 1]]) as f32 / 32_768.0,
            PcmFormat::I24 => {
                let v = i32::from_le_bytes([0, d[at], d[at + 1], d[at + 2]]) >> 8;
                v as f32 / 8_388_608.0
            }
            PcmFormat::I32 => {
                let v = i32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
                (v as f64 / 2_147_483_648.0) as f32
            }
            PcmFormat::F32 => f32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]),
        }
    }

    /// Frames `range` averaged over channels (the arithmetic of [`mix_into`]).
    fn mono(&self, range: Range<usize>) -> Vec<f32> {
        let bps = self.bytes_per_sample();
        let frame = bps * self.channels;
        let scale = 1.0 / self.channels as f32;
        if self.channels == 1 && self.format == PcmFormat::I16 {
            let bytes = &self.data[range.start * 2..range.end * 2];
            return bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32_768.0 * scale)
                .collect();
        }
        range
            .map(|i| {
                let s: f32 = (0..self.channels)
                    .map(|c| self.sample(i * frame + c * bps))
                    .sum();
                s * scale
            })
            .collect()
    }
}

/// Decodes the crop of `len` samples of 32 kHz mono that [`crop_or_pad`] would take from the
/// whole decoded, resampled clip at offset `pick(total)` (`pick` is called only when the clip
/// is longer than `len`); returns the crop zero-padded to `len` and its valid length.
///
/// When the stored rate is already 32 kHz only the crop is decoded: wav reads the samples it
/// needs, other formats seek (sample-accurately) to the crop. Other rates decode and resample the
/// whole clip, since the resampler's output near the crop's edges depends on its neighbours.
pub fn load_crop_32k(
    bytes: &[u8],
    name: &str,
    origin: &str,
    len: usize,
    pick: &dyn Fn(usize) -> usize,
) -> Result<(Vec<f32>, usize)> {
    guarded(origin, || {
        if let Some(wav) = WavPcm::parse(bytes).filter(|w| w.sample_rate == TARGET_SR) {
            let total = wav.frames();
            let start = if total > len {
                pick(total).min(total - len)
            } else {
                0
            };
            let mut out = wav.mono(start..(start + len).min(total));
            let valid = out.len();
            out.resize(len, 0.0);
            return Ok((out, valid));
        }
        if let Some(crop) = seek_crop(bytes, name, origin, len, pick)? {
            return Ok(crop);
        }
        let wave = load_32k(bytes, name, origin)?;
        let offset = if wave.len() > len {
            pick(wave.len())
        } else {
            0
        };
        Ok(crop_or_pad(&wave, len, offset))
    })
}

/// The crop of a longer-than-`len` 32 kHz clip read by seeking with symphonia; `None` when the
/// clip is at another rate, not longer than `len`, of unknown length or not seekable.
fn seek_crop(
    bytes: &[u8],
    name: &str,
    origin: &str,
    len: usize,
    pick: &dyn Fn(usize) -> usize,
) -> Result<Option<(Vec<f32>, usize)>> {
    let (mut format, track_id, params) = open_symphonia(bytes, name, origin)?;
    let total = format
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .and_then(|t| t.num_frames)
        .unwrap_or(0) as usize;
    if params.sample_rate != Some(TARGET_SR) || total <= len {
        return Ok(None);
    }
    let start = pick(total).min(total - len);
    let to = SeekTo::Timestamp {
        ts: Timestamp::new(start as i64),
        track_id,
    };
    let Ok(seeked) = format.seek(SeekMode::Accurate, to) else {
        return Ok(None);
    };
    let mut skip = (start as i64 - seeked.actual_ts.get()).max(0) as usize;
    let mut packets = MonoPackets::new(format, track_id, &params, origin)?;
    let mut out = Vec::with_capacity(len + 4096);
    while out.len() < len {
        let before = out.len();
        if packets.mix_next(&mut out)?.is_none() {
            break;
        }
        let drop = skip.min(out.len() - before);
        out.drain(before..before + drop);
        skip -= drop;
    }
    out.truncate(len);
    let valid = out.len();
    out.resize(len, 0.0);
    Ok(Some((out, valid)))
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
    guarded(origin, || resample(&mono, TARGET_SR, origin))
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

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The direct wav reader gives symphonia's samples bit for bit (every PCM layout it takes).
    #[test]
    fn direct_wav_equals_symphonia() {
        let x = sine(440.0, 32_000, 0.3);
        let y: Vec<f32> = x.iter().map(|v| -0.7 * v).collect();
        for (chans, bits) in [(1, 16), (2, 16), (1, 24), (2, 24), (3, 16)] {
            let planes = vec![x.clone(), y.clone(), x.clone()][..chans].to_vec();
            let wav = encode_wav(&planes, 32_000, bits).unwrap();
            assert!(WavPcm::parse(&wav).is_some(), "{chans} ch {bits} bit");
            let fast = decode_mono(&wav, "a.wav", "t").unwrap();
            let slow = decode_symphonia(&wav, "a.wav", "t").unwrap();
            assert_eq!(fast, slow, "{chans} ch {bits} bit");
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for v in &x {
            w.write_sample(*v).unwrap();
            w.write_sample(-v).unwrap();
        }
        w.finalize().unwrap();
        let wav = cur.into_inner();
        let fast = decode_mono(&wav, "f.wav", "t").unwrap();
        assert_eq!(fast, decode_symphonia(&wav, "f.wav", "t").unwrap());
        assert_eq!(fast.sample_rate, 16_000);
    }

    fn full_then_crop(
        bytes: &[u8],
        name: &str,
        len: usize,
        pick: &dyn Fn(usize) -> usize,
    ) -> (Vec<f32>, usize) {
        let w = load_32k(bytes, name, "t").unwrap();
        let off = if w.len() > len { pick(w.len()) } else { 0 };
        crop_or_pad(&w, len, off)
    }

    /// Crop decoding (wav samples read in place, FLAC by seeking) equals decoding the whole clip
    /// then cropping, for crops inside, at the end of and longer than the clip, and at other rates.
    #[test]
    fn crop_decoding_equals_full_decoding_then_cropping() {
        let x = sine(523.0, 32_000, 1.7);
        let wav = encode_wav(&[x.clone(), x.clone()], 32_000, 16).unwrap();
        let flac = fixture("chirp-32k-mono-2.5s.flac");
        let other = fixture("tone-44k1-stereo.flac");
        let pick_mid = |total: usize| total / 2;
        assert!(seek_crop(&flac, "c.flac", "t", 4_000, &pick_mid)
            .unwrap()
            .is_some());
        assert!(seek_crop(&other, "t.flac", "t", 4_000, &pick_mid)
            .unwrap()
            .is_none());
        for (bytes, name) in [(&wav, "a.wav"), (&flac, "c.flac"), (&other, "t.flac")] {
            for len in [4_000usize, 32_000, 200_000] {
                for frac in [0.0f64, 0.37, 0.999, 1.0] {
                    let pick = move |total: usize| ((total - len) as f64 * frac) as usize;
                    let got = load_crop_32k(bytes, name, "t", len, &pick).unwrap();
                    let want = full_then_crop(bytes, name, len, &pick);
                    assert_eq!(got.1, want.1, "{name} len {len} at {frac}");
                    assert!(
                        got.0 == want.0,
                        "{name} len {len} at {frac}: samples differ"
                    );
                }
            }
        }
    }

    /// Audio resampled once at prepare time (16-bit wav) is what the loader makes of the source
    /// to within 16-bit quantisation, and is then read without resampling.
    #[test]
    fn stored_at_32k_matches_resampling_in_the_loader() {
        let src = fixture("tone-44k1-stereo.flac");
        let st = AudioStorage::default();
        let (blob, rate, dur) = st.store(src.clone(), "tone.flac", "t").unwrap();
        assert_eq!((rate, blob.path.as_str()), (TARGET_SR, "tone.wav"));
        assert!((dur - 0.5).abs() < 1e-3, "{dur}");
        let loader_side = load_32k(&src, "tone.flac", "t").unwrap();
        let stored = decode_mono(&blob.bytes, &blob.path, "t").unwrap();
        assert_eq!(stored.sample_rate, TARGET_SR);
        assert_eq!(stored.samples.len(), loader_side.len());
        let worst = stored
            .samples
            .iter()
            .zip(&loader_side)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1.0 / 32_768.0, "worst {worst}");
        let orig = AudioStorage::new(Codec::Original, None).unwrap();
        assert_eq!(
            orig.store(src.clone(), "tone.flac", "t").unwrap().0.bytes,
            src
        );
        assert!(AudioStorage::new(Codec::Original, Some(16_000)).is_err());
        let flac = AudioStorage::new(Codec::Flac, None)
            .unwrap_err()
            .to_string();
        assert!(flac.contains("--codec wav"), "{flac}");
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

//! Test helpers: a briefly trained tiny model, a folder of generated audio, an HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use hr_train::TrainConfig;

/// The shared scratch folder of this test binary.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "hr-search-{}",
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The synthetic dataset of 80 clips (8 in `test`), generated once per binary.
pub fn dataset() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let root = scratch().join("data");
    if !root.join("manifest.json").is_file() {
        hr_data::synthetic::prepare(&root, 80, 3, None, &|_| {}).unwrap();
    }
    root
}

/// A tiny model with `fusion` and keyword metadata trained for two steps on [`dataset`]
/// (1 s clips), once per binary; returns its run directory.
pub fn trained(fusion: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let data = dataset();
    let _g = LOCK.lock().unwrap();
    let run = scratch().join(format!("run-{fusion}"));
    if !run.join("config.toml").is_file() || hr_train::eval_job::resolve(&run).is_err() {
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        let set = vec![
            format!("data.root={}", path(&data)),
            format!("run.dir={}", path(&run)),
            "run.max_steps=2".into(),
            "data.clip_seconds=1.0".into(),
            "data.workers=1".into(),
            "optim.global_batch=8".into(),
            format!("model.fusion={fusion:?}"),
            "model.metadata=\"keywords\"".into(),
        ];
        let cfg = TrainConfig::from_toml_str("", &set).unwrap();
        hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    }
    run
}

/// Writes a 16-bit mono wav of a tone at `freq` Hz, `secs` long, at `rate`.
pub fn write_tone(path: &Path, freq: f32, secs: f32, rate: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (secs * rate as f32) as usize;
    for i in 0..n {
        let t = i as f32 / rate as f32;
        let v = (2.0 * std::f32::consts::PI * freq * t).sin() * 0.3 * (1.0 + (3.0 * t).sin()) / 2.0;
        w.write_sample((v * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A folder of 12 tones (two at 44.1 kHz, in a sub-folder) with a `metadata.jsonl` sidecar
/// for ten of them; the other two have no metadata and no captions.
pub fn tone_folder() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let root = scratch().join("tones");
    if root.join("metadata.jsonl").is_file() {
        return root;
    }
    let words = [
        "dog", "car", "rain", "bird", "engine", "water", "bell", "wind", "crowd", "door",
    ];
    let mut sidecar = String::new();
    for i in 0..12 {
        let (name, rate) = match i {
            10 | 11 => (format!("more/tone{i:02}.wav"), 44_100),
            _ => (format!("tone{i:02}.wav"), 32_000),
        };
        write_tone(&root.join(&name), 200.0 + 150.0 * i as f32, 1.5, rate);
        if let Some(w) = words.get(i) {
            sidecar.push_str(
                &serde_json::json!({
                    "file_name": name,
                    "captions": [format!("a {w} makes a sound"), format!("the sound of a {w}")],
                    "keywords": [w, "tone"],
                })
                .to_string(),
            );
            sidecar.push('\n');
        }
    }
    std::fs::write(root.join("metadata.jsonl"), sidecar).unwrap();
    root
}

/// A response: status, content type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `GET path` on `addr` over HTTP/1.1 (one connection per request).
pub fn get(addr: &str, path: &str) -> std::io::Result<Reply> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut content_type = String::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = v.trim().to_string(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[p + 2 + n + 2..];
    }
    out
}

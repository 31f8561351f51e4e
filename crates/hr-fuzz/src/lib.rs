//! The readers of untrusted input, each behind one function of bytes: the entry points of the
//! cargo-fuzz targets in `fuzz/` (nightly toolchain, libFuzzer) and of the corpus replay that CI
//! runs on the stable toolchain (`tests/corpus.rs`). For any input a reader must return a value
//! or a typed error: a panic, an abort, a hang or unbounded memory is a bug, and every input that
//! found one is committed under `fuzz/regressions/TARGET/` and replayed forever.

#![forbid(unsafe_code)]

use std::path::Path;

/// Call first in a fuzz target: restores the default panic hook, which libFuzzer's harness
/// replaces with one that aborts on every panic. A panic our boundary catches
/// (`hr_core::catch_panic`, turned into a typed error) then lets the campaign go on; one that
/// escapes the entry point still aborts and is reported as a crash.
pub fn report_only_uncaught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// A fuzz target: its name (the folder of its corpus) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("manifest", manifest),
    ("config", config),
    ("tokenizer", tokenizer),
    ("audio", audio),
    ("csv", csv),
    ("safetensors", safetensors),
    ("shard", shard),
    ("sidecar", sidecar),
    ("sweep", sweep),
    ("rendezvous", rendezvous),
    ("ring", ring),
];

/// The text of `data` (lossy), for the readers of text.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `manifest.json` of a dataset.
pub fn manifest(data: &[u8]) {
    let _ = hr_data::Manifest::from_json(data, "fuzz/manifest.json");
}

/// A training config in TOML; the first line is also tried as a `--set` override.
pub fn config(data: &[u8]) {
    let t = text(data);
    let first = t.lines().next().unwrap_or("").to_string();
    let _ = hr_train::TrainConfig::from_toml_str(&t, &[]);
    let _ = hr_train::TrainConfig::from_toml_str("", &[first]);
}

/// A `tokenizer.json`, then encoding a sentence with it.
pub fn tokenizer(data: &[u8]) {
    if let Ok(tok) = hr_text::TextTokenizer::from_bytes(data, "fuzz/tokenizer.json", 32) {
        let _ = tok.encode_batch(&["a dog barks while cars pass by"]);
    }
}

/// Encoded audio of any codec the loader accepts (the first byte picks the file-name hint):
/// the whole-file decoder and the crop decoder.
pub fn audio(data: &[u8]) {
    let names = ["a.wav", "a.flac", "a.ogg", "a.mp3", "a"];
    let name = names[data.first().map_or(0, |b| *b as usize) % names.len()];
    let _ = hr_data::audio::load_32k(data, name, "fuzz");
    let _ = hr_data::audio::load_crop_32k(data, name, "fuzz", 32_000, &|_| 0);
}

/// A CSV of the converters (Clotho and AudioCaps captions and metadata, `captions.csv`).
pub fn csv(data: &[u8]) {
    let _ = hr_data::convert::csv_rows(&text(data), Path::new("fuzz.csv"));
}

/// A safetensors checkpoint file.
pub fn safetensors(data: &[u8]) {
    let _ = hr_nn::io::parse_safetensors(data, Path::new("fuzz.safetensors"));
}

/// A Parquet shard: opened from an in-memory store and read whole, then its audio pages.
pub fn shard(data: &[u8]) {
    let Ok(store) = hr_data::Store::in_memory("fuzz") else {
        return;
    };
    if store
        .put("s.parquet", bytes::Bytes::copy_from_slice(data))
        .is_err()
    {
        return;
    }
    let info = hr_data::ShardInfo {
        path: "s.parquet".into(),
        rows: 0,
        bytes: data.len() as u64,
        sha256: String::new(),
    };
    if let Ok(r) = hr_data::shard::ShardReader::open(&store, &info, false) {
        let _ = r.read_all();
        let _ = r.read_audio(0, &[0]);
    }
}

/// The sidecar of `prepare folder` (`metadata.jsonl` when the input starts with `{`, else
/// `captions.csv`) beside one audio file.
pub fn sidecar(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let name = match data.first() {
        Some(b'{') => "metadata.jsonl",
        _ => "captions.csv",
    };
    if std::fs::write(dir.path().join(name), data).is_ok()
        && std::fs::write(dir.path().join("a.wav"), b"RIFF").is_ok()
    {
        let _ = hr_data::convert::folder::clips(dir.path());
    }
}

/// A sweep file.
pub fn sweep(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let file = dir.path().join("sweep.toml");
    if std::fs::write(&file, data).is_ok() {
        let _ = hr_sweep::plan::Plan::load(&file, Some(dir.path()));
    }
}

/// The rendezvous store's wire: the handshake, requests as an attacker and as a token holder
/// would send them, replies (`hr_dist::fuzzing::rendezvous`).
pub fn rendezvous(data: &[u8]) {
    hr_dist::fuzzing::rendezvous(data)
}

/// The ring's frames from a left neighbour, unauthenticated and sealed (`hr_dist::fuzzing::ring`).
pub fn ring(data: &[u8]) {
    hr_dist::fuzzing::ring(data)
}

//! `hr-data prepare reencode`: a dataset stored again at 32 kHz gives the loader the waveforms
//! it made by resampling every epoch, to within 16-bit quantisation.

mod common;

use std::process::Command;
use std::sync::Arc;

use hr_data::audio::{AudioStorage, TARGET_SR};
use hr_data::loader::EvalSet;
use hr_data::rewrite::{reencode, Source};
use hr_data::{LoaderConfig, Manifest, SplitIndex, Store};

fn waveforms(root: &std::path::Path, clip_seconds: f32) -> Vec<Vec<f32>> {
    let store = Store::local(root).unwrap();
    let m = Manifest::load(&store).unwrap();
    let index = Arc::new(SplitIndex::open(&store, &m, "train", true).unwrap());
    let cfg = LoaderConfig {
        clip_seconds,
        ..LoaderConfig::default()
    };
    let ev = EvalSet::new(index, cfg, common::tokenizer(root)).unwrap();
    let b = ev.clip_batch(0, ev.num_clips()).unwrap();
    b.waveforms.chunks(b.samples).map(<[f32]>::to_vec).collect()
}

#[test]
fn reencoded_dataset_matches_loader_resampling_and_records_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // Clips at 16 kHz and 32 kHz, stored as their source files were.
    common::write_dataset(&src, 40, 16);
    let out = dir.path().join("at32k");
    let source = Source::open(src.to_str().unwrap(), None).unwrap();
    let m = reencode(&source, "src", &out, AudioStorage::default(), None, &|_| {}).unwrap();

    assert_eq!(m.audio, Some(AudioStorage::default()));
    assert_eq!(m.sources.len(), 1);
    assert_eq!(m.sources[0].manifest_sha256, source.manifest_sha256);
    assert_eq!(m.sources[0].rows["train"], 40);
    assert_eq!(m.tokenizer.as_deref(), Some("tokenizer.json"));
    assert!(out.join("tokenizer.json").exists());
    let before = common::records(&src, "train");
    let after = common::records(&out, "train"); // checksums verified
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.id, &b.captions, &b.keywords),
            (&a.id, &a.captions, &a.keywords)
        );
        assert_eq!(a.sample_rate, TARGET_SR as i32);
    }
    // Crops longer than every clip (padding) and shorter (cropping at 0).
    for secs in [0.6f32, 0.2] {
        let (w0, w1) = (waveforms(&src, secs), waveforms(&out, secs));
        for (a, b) in w0.iter().zip(&w1) {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1.0 / 32_768.0, "worst difference {worst}");
        }
    }
    let again = Source::open(src.to_str().unwrap(), None).unwrap();
    let err = reencode(&again, "src", &out, AudioStorage::default(), None, &|_| {});
    assert!(err.unwrap_err().to_string().contains("exists"));
}

#[test]
fn reencode_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    common::write_dataset(&src, 10, 16);
    let out = dir.path().join("out");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hr-data"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "prepare",
        "reencode",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("32000 Hz"), "{text}");
    let o = run(&["verify", out.to_str().unwrap()]);
    assert!(o.status.success());
    let o = run(&[
        "prepare",
        "reencode",
        src.to_str().unwrap(),
        "--out",
        dir.path().join("f").to_str().unwrap(),
        "--codec",
        "flac",
    ]);
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && text.contains("--codec wav"),
        "{text}"
    );
}

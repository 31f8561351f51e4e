//! End-to-end tests of the `hr-data` binary.

use hr_core::testing::assert_mentions;
use std::process::Command;

fn hr_data(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hr-data"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn synthetic_prepare_is_deterministic_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        let o = hr_data(&[
            "prepare",
            "synthetic",
            "--clips",
            "30",
            "--seed",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let ma: hr_data::Manifest =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    let mb: hr_data::Manifest =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(ma, mb, "same seed must give byte-identical shards");
    assert_eq!(ma.rows("train") + ma.rows("val") + ma.rows("test"), 30);
    assert_eq!(
        std::fs::read(a.join("tokenizer.json")).unwrap(),
        std::fs::read(b.join("tokenizer.json")).unwrap(),
        "tokenizer training must be deterministic"
    );

    let o = hr_data(&["verify", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("30 clips decoded, 0 failures"),
        "{}",
        text(&o)
    );

    let o = hr_data(&["inspect", a.to_str().unwrap()]);
    assert!(o.status.success());
    let t = text(&o);
    assert_mentions(&t, &["split train", "captions", "audio: Struct"]);

    // Corrupt a shard: verify must fail and name it.
    let shard = a.join(&ma.split("val").unwrap()[0].path);
    let mut bytes = std::fs::read(&shard).unwrap();
    let k = bytes.len() / 3;
    bytes[k] ^= 0x55;
    std::fs::write(&shard, bytes).unwrap();
    let o = hr_data(&["verify", a.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("val/part-00000-of-00001.parquet")
            && text(&o).contains("sha256 mismatch"),
        "{}",
        text(&o)
    );
}

#[test]
fn verify_without_manifest_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let o = hr_data(&["verify", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no manifest.json"), "{}", text(&o));
    if !cfg!(feature = "cloud") {
        let o = hr_data(&["inspect", "s3://bucket/ds"]);
        assert!(!o.status.success());
        assert!(text(&o).contains("--no-default-features"), "{}", text(&o));
    }
}

#[test]
fn prepare_folder_reports_bad_audio_by_flag_and_records_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let tone: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let wav = hr_data::audio::encode_wav(&[tone], 16_000, 16).unwrap();
    std::fs::write(src.join("good.wav"), wav).unwrap();
    std::fs::write(src.join("broken.wav"), b"RIFF but not really a wav file").unwrap();
    std::fs::write(
        src.join("captions.csv"),
        "file_name,caption\ngood.wav,a tone\nbroken.wav,noise\n",
    )
    .unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\ntone\n").unwrap();
    let out = dir.path().join("out");
    let args = |policy: &'static str| {
        vec![
            "prepare".to_string(),
            "folder".into(),
            "--source".into(),
            src.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--on-bad-audio".into(),
            policy.into(),
            "--tokenizer".into(),
            vocab.display().to_string(),
        ]
    };
    let run = |policy| {
        let a = args(policy);
        hr_data(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run("fail");
    assert!(!o.status.success());
    let t = text(&o);
    assert_mentions(&t, &["broken.wav", "--on-bad-audio skip"]);
    assert!(
        !out.join("manifest.json").exists(),
        "no dataset after a failure"
    );

    let o = run("skip");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_mentions(&t, &["undecodable audio: 1 clips skipped", "broken.wav"]);
    let m: hr_data::Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m.tokenizer.as_deref(), Some("tokenizer.json"));
    let store = hr_data::Store::local(&out).unwrap();
    let tok = hr_data::dataset_tokenizer(&store, &m, 32).unwrap();
    assert_eq!(tok.encode("A tone!").unwrap(), [2, 5, 6, 3]);
}

/// The default log filter keeps dependencies' INFO chatter (symphonia logs two lines per ogg
/// file it opens) out of batch-job logs; `RUST_LOG` still brings it back.
#[test]
fn default_logs_leave_out_dependency_chatter() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let ogg =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tone-48k-mono.ogg");
    std::fs::copy(ogg, src.join("tone.ogg")).unwrap();
    std::fs::write(
        src.join("captions.csv"),
        "file_name,caption\ntone.ogg,a tone\n",
    )
    .unwrap();
    let prepare = |out: &str, rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hr-data"));
        // `--root`, the flag's former name, still works (scripts written for it run).
        let flag = if out == "a" { "--root" } else { "--source" };
        c.args(["prepare", "folder", flag])
            .arg(&src)
            .arg("--out")
            .arg(dir.path().join(out))
            .env_remove("RUST_LOG");
        if let Some(f) = rust_log {
            c.env("RUST_LOG", f);
        }
        c.output().unwrap()
    };
    let o = prepare("a", None);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("symphonia"), "{err}");
    let o = prepare("b", Some("info"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("symphonia"),
        "{}",
        text(&o)
    );
}

/// Without a terminal (a batch job) long work logs progress lines with count, rate and time
/// left, every `HR_PROGRESS_EVERY_S` seconds.
#[test]
fn progress_lines_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hr-data"))
            .args(args)
            .env("HR_PROGRESS_EVERY_S", "0")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let d = data.to_str().unwrap();
    let o = run(&["prepare", "synthetic", "--clips", "12", "--out", d]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("synthetic: 12/12 clips (") && err.contains(" left)"),
        "{err}"
    );
    let o = run(&["verify", d]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("verify: ") && err.contains(" rows ("), "{err}");
}

/// `--log-format json` (any binary) writes every log line as one JSON object.
#[test]
fn log_format_json_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let o = Command::new(env!("CARGO_BIN_EXE_hr-data"))
        .args([
            "--log-format",
            "json",
            "prepare",
            "synthetic",
            "--clips",
            "8",
            "--out",
        ])
        .arg(&out)
        .env("HR_PROGRESS_EVERY_S", "0")
        .env_remove("HR_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "progress lines expected");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["level"], "INFO", "{l}");
    }
}

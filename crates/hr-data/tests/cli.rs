//! End-to-end tests of the `hr-data` binary.

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
    assert!(
        t.contains("split train") && t.contains("captions") && t.contains("audio: Struct"),
        "{t}"
    );

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
        assert!(text(&o).contains("--features cloud"), "{}", text(&o));
    }
}

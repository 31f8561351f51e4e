//! A training run that reads its dataset from `s3://` end to end (a local moto server): the
//! same losses as the run on the local copy, validation from S3, `hr-eval` and `hr-search index`
//! on the S3 root. Skipped without moto on a developer machine; CI installs moto and sets
//! `HR_REQUIRE_MOTO`, which turns the skip into a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use hr_data::testing::Moto;
use hr_train::{train, Resume, TrainConfig, TrainControl};

const URL: &str = "s3://hr-train-bucket/datasets/synthetic-40";

fn run(data: &str, dir: &Path) -> Vec<f64> {
    let set = [
        format!("data.root={data:?}"),
        common::set_path("run.dir", dir),
        "run.max_steps=4".into(),
        "data.clip_seconds=1.0".into(),
        "data.workers=1".into(),
        "optim.global_batch=8".into(),
        "eval.every_steps=2".into(),
        "eval.batch_size=8".into(),
    ];
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    train(&cfg, &Resume::Fresh, &TrainControl::default()).unwrap();
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

/// A binary of the workspace next to this test's (cargo builds them for the workspace's tests).
fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hr-eval")).with_file_name(name)
}

fn eval_json(run: &Path, data: &str, out: &Path) -> serde_json::Value {
    let o = Command::new(bin("hr-eval"))
        .args([
            "--checkpoint",
            run.to_str().unwrap(),
            "--data",
            data,
            "--split",
            "test",
        ])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn a_run_trains_and_evaluates_from_s3() {
    let Some(_moto) = Moto::start("hr-train-bucket") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("data");
    common::synthetic_40(&local);
    hr_data::testing::upload_dataset(&local, URL).unwrap();

    let from_s3 = run(URL, &dir.path().join("s3-run"));
    let from_disk = run(local.to_str().unwrap(), &dir.path().join("local-run"));
    assert_eq!(from_s3.len(), 4);
    assert_eq!(
        from_s3, from_disk,
        "the same batches, read from S3 and from disk"
    );
    let val = |run: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join(run).join("eval.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut()
                    .unwrap()
                    .retain(|k, _| k == "step" || k.contains('@'));
                v
            })
            .collect()
    };
    assert_eq!(
        val("s3-run").len(),
        2,
        "validation at steps 2 and 4, read from S3"
    );
    assert_eq!(val("s3-run"), val("local-run"));

    let a = eval_json(&dir.path().join("s3-run"), URL, &dir.path().join("a.json"));
    let b = eval_json(
        &dir.path().join("s3-run"),
        local.to_str().unwrap(),
        &dir.path().join("b.json"),
    );
    for k in ["R@1", "R@5", "R@10", "mAP@10", "queries"] {
        assert_eq!(a[k], b[k], "{k}");
    }

    let search = bin("hr-search");
    if !search.is_file() {
        println!("skipped hr-search: not built (cargo test --workspace builds it)");
        return;
    }
    let index = dir.path().join("index");
    let o = Command::new(search)
        .args([
            "index",
            "--checkpoint",
            dir.path().join("s3-run").to_str().unwrap(),
        ])
        .args([
            "--data",
            URL,
            "--split",
            "test",
            "--out",
            index.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("index.json")).unwrap()).unwrap();
    assert_eq!(m["source"]["root"], URL);
    assert_eq!(m["items"], a["clips"]);
}

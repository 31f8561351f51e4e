//! `hr-search` end to end through its binary on a folder of audio: index, query (text, batch
//! in the DCASE submission layout, clip-to-clip), export.

mod common;

use std::path::Path;
use std::process::Command;

use hr_search::index::Index;
use hr_tensor::Device;

fn hr_search(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hr-search"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `hr-search index` of the tone folder with the late-fusion model into `out`.
fn index_folder(out: &Path) -> (bool, String, String) {
    let run = common::trained("late");
    let folder = common::tone_folder();
    hr_search(&[
        "index",
        "--checkpoint",
        s(&run),
        "--folder",
        s(&folder),
        "--out",
        s(out),
    ])
}

/// The index of the tone folder, built once per test binary: the tests run in parallel
/// threads, and two builds into one folder at once would collide.
fn folder_index() -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let out = common::scratch().join("tones-index");
    if !out.join("index.json").is_file() {
        let (ok, stdout, err) = index_folder(&out);
        assert!(ok, "{err}");
        assert!(stdout.contains("12 clips"), "{stdout}");
    }
    out
}

#[test]
fn a_folder_is_indexed_and_queried_by_text() {
    let out = folder_index();
    let index = Index::open(&out, Device::Cpu).unwrap();
    assert_eq!(index.len(), 12);
    let t3 = index.position("tone03.wav").unwrap();
    assert_eq!(index.items[t3].metadata, "bird tone");
    assert_eq!(index.items[t3].captions.len(), 2);
    assert!((index.items[t3].duration_s - 1.5).abs() < 1e-3);
    let t11 = index.position("more/tone11.wav").unwrap();
    assert_eq!(index.items[t11].metadata, "", "no sidecar entry");
    // The run fuses missing metadata as the empty text (`model.missing_metadata`'s default).
    assert!(index.present[t11] && index.present[t3]);
    assert!(
        (index.items[t11].duration_s - 1.5).abs() < 1e-3,
        "44.1 kHz file"
    );

    let (ok, stdout, err) = hr_search(&["query", s(&out), "a bird sings", "-k", "5", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(results
        .iter()
        .all(|r| index.position(r["id"].as_str().unwrap()).is_ok()));

    let (ok, stdout, err) = hr_search(&[
        "query",
        s(&out),
        "--like",
        "tone03.wav",
        "-k",
        "3",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&"tone03.wav"));

    let (ok, _, err) = hr_search(&["query", s(&out), "--like", "nope.wav"]);
    assert!(!ok && err.contains("nope.wav"), "{err}");
}

#[test]
fn a_query_file_is_ranked_in_the_dcase_submission_layout() {
    let out = folder_index();
    let dir = common::scratch().join("dcase");
    std::fs::create_dir_all(&dir).unwrap();
    let queries = dir.join("retrieval_captions.csv");
    std::fs::write(&queries, "caption\na dog barks\n\"rain, then wind\"\n").unwrap();
    let sub = dir.join("submission.csv");
    let (ok, _, err) = hr_search(&["query", s(&out), "--queries", s(&queries), "--out", s(&sub)]);
    assert!(ok, "{err}");
    let mut r = csv::Reader::from_path(&sub).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut want = vec!["caption".to_string()];
    want.extend((1..=10).map(|i| format!("fname_{i}")));
    assert_eq!(header, want);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][0], "rain, then wind");
    for row in &rows {
        let names: Vec<&str> = row.iter().skip(1).collect();
        assert_eq!(names.len(), 10);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("tone") && n.ends_with(".wav")),
            "{names:?}"
        );
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
    }
}

#[test]
fn export_writes_npy_equal_to_the_index() {
    let out = folder_index();
    let dir = common::scratch().join("export");
    let (ok, _, err) = hr_search(&["export", s(&out), "--out", s(&dir)]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(dir.join("embeddings.npy")).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let index = Index::open(&out, Device::Cpu).unwrap();
    let dim = index.manifest.plan.dim;
    assert!(
        header.contains(&format!("'shape': (12, {dim})")) && header.contains("'<f4'"),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + hlen..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(values, index.vectors.to_vec_f32().unwrap());
    let ids = std::fs::read_to_string(dir.join("ids.txt")).unwrap();
    let want: Vec<&str> = index.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.lines().collect::<Vec<_>>(), want);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let run = common::trained("late");
    let (ok, _, err) = hr_search(&["query", "/nonexistent/index", "dog"]);
    assert!(!ok && err.contains("/nonexistent/index"), "{err}");
    let empty = common::scratch().join("not-empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "mine").unwrap();
    let (ok, _, err) = index_folder(&empty);
    assert!(
        !ok && err.contains("not-empty") && err.contains("not an index folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(empty.join("notes.txt")).unwrap(),
        "mine"
    );
    let (ok, _, err) = hr_search(&["index", "--checkpoint", s(&run), "--out", s(&empty)]);
    assert!(!ok && err.contains("--data"), "{err}");
}

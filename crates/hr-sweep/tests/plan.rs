//! Sweep files -> runs: the paper's Table I, the demo, stable ids and bad input.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{repo, AXES};
use hr_core::testing::assert_mentions;
use hr_sweep::coordinator::check_unchanged;
use hr_sweep::ledger::LedgerState;
use hr_sweep::{Plan, SweepError};

fn sweep(name: &str) -> PathBuf {
    repo().join("configs/sweeps").join(name)
}

/// Writes a sweep file next to a copy of nothing (base = the repo's demo config, absolute).
fn write_sweep(dir: &Path, body: &str) -> PathBuf {
    let base = repo().join("configs/experiments/demo.toml");
    let text = format!(
        "[sweep]\nname = \"t\"\nbase = {:?}\nruns_dir = \"runs\"\nbaseline = {{ fusion = \"none\" }}\n{body}",
        base.display().to_string()
    );
    let p = dir.join("sweep.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unknown_paths_are_errors_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("s.toml");
    let text = "[paths]\nroot = \"/d\"\n[sweep]\nname = \"p\"\nruns_dir = \"r\"\n\
                [base]\ndata = { root = \"{paths.rot}/x\" }\n[[axes]]\nname = \"seed\"\nkey = \"run.seed\"\nvalues = [1]\n";
    std::fs::write(&f, text).unwrap();
    let msg = Plan::load(&f, None).err().unwrap().to_string();
    assert!(msg.contains("{paths.rot}") && msg.contains("root"), "{msg}");
    std::fs::write(&f, text.replace("rot}", "root}")).unwrap();
    let plan = Plan::load(&f, None).unwrap();
    assert_eq!(plan.runs[0].config.data.root, "/d/x");
}

/// (dataset, text model, fusion, metadata, eval set) of every number in spec section 7.
const TABLE1: &str = "
clotho           bert-base          none none          clotho
clotho           bert-base          mid  keywords      clotho
clotho           bert-base          late keywords      clotho
clotho           bert-base          mid  full_sentence clotho
clotho           bert-base          late full_sentence clotho
clotho           bert-base-separate late keywords      clotho
clotho           bert-large         none none          clotho
clotho           bert-large         late keywords      clotho
clotho           bert-large         late full_sentence clotho
clotho+audiocaps bert-base          none none          clotho
clotho+audiocaps bert-base          late keywords      clotho
audiocaps        bert-base          none none          audiocaps
audiocaps        bert-base          mid  labels        audiocaps
audiocaps        bert-base          late labels        audiocaps
audiocaps        bert-large         none none          audiocaps
audiocaps        bert-large         late labels        audiocaps
clotho+audiocaps bert-base          none none          audiocaps
clotho+audiocaps bert-base          late keywords      audiocaps
";

#[test]
fn table1_lists_exactly_the_papers_configurations() {
    let plan = Plan::load(&sweep("table1.toml"), None).unwrap();
    let expected: BTreeSet<(&str, &str, &str, &str, &str)> = TABLE1
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [a, b, c, d, e] => (a, b, c, d, e),
            _ => panic!("bad row {l:?}"),
        })
        .collect();
    let mut got = BTreeSet::new();
    let mut seeds: std::collections::BTreeMap<_, Vec<String>> = Default::default();
    for r in &plan.runs {
        let l = |a: &str| r.label(a).unwrap().to_string();
        let key = (l("dataset"), l("text"), l("fusion"), l("metadata"));
        seeds.entry(key.clone()).or_default().push(l("seed"));
        for e in &r.evals {
            got.insert((
                key.0.clone(),
                key.1.clone(),
                key.2.clone(),
                key.3.clone(),
                e.name.clone(),
            ));
        }
        // The resolved config carries the row's settings.
        let preset = if key.1.starts_with("bert-base") {
            "paper-base"
        } else {
            "paper-large"
        };
        assert_eq!(r.config.model.preset, preset);
        let separate = key.1 == "bert-base-separate";
        assert_eq!(r.config.model.separate_metadata_encoder, separate);
        // [paths] names the pretrained files and dataset roots once.
        let bert = if preset == "paper-base" {
            "/models/bert-base-uncased"
        } else {
            "/models/bert-large-uncased"
        };
        assert_eq!(r.config.model.text_init, bert);
        assert_eq!(r.config.model.audio_init, "/models/mn40_as_ext.safetensors");
        let root = match key.0.as_str() {
            "clotho" => "/data/hr/clotho",
            "audiocaps" => "/data/hr/audiocaps",
            _ => "/data/hr/clotho+audiocaps",
        };
        assert_eq!(r.config.data.root, root);
        assert_eq!(r.config.optim.rampdown_stop, 20.0);
        assert_eq!(format!("{:?}", r.config.model.fusion).to_lowercase(), key.2);
        assert_eq!(r.config.run.seed.to_string(), l("seed"));
    }
    let got: BTreeSet<(&str, &str, &str, &str, &str)> = got
        .iter()
        .map(|(a, b, c, d, e)| (a.as_str(), b.as_str(), c.as_str(), d.as_str(), e.as_str()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(seeds.len(), 16, "16 training configurations");
    assert!(seeds.values().all(|s| s == &["1", "2", "3"]));
    assert_eq!(plan.runs.len(), 48);
    // Every report row has the paper's number, and its baseline.
    let rows = hr_sweep::report::rows(&plan);
    assert_eq!(rows.len(), 18);
    assert!(rows.iter().all(|r| r.paper.is_some()), "{rows:#?}");
    let hybrid = rows
        .iter()
        .find(|r| {
            r.labels[2].1 == "late"
                && r.labels[3].1 == "full_sentence"
                && r.labels[1].1 == "bert-base"
        })
        .unwrap();
    assert!((hybrid.paper_delta.unwrap() - (35.62 - 26.8)).abs() < 1e-9);
}

#[test]
fn demo_plan_is_small_and_ids_are_stable() {
    let a = Plan::load(&sweep("demo.toml"), None).unwrap();
    let b = Plan::load(&sweep("demo.toml"), Some(Path::new("/elsewhere/runs"))).unwrap();
    assert_eq!(a.runs.len(), 6);
    let ids = |p: &Plan| p.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "ids do not depend on the runs directory");
    assert_eq!(a.hash, b.hash);
    assert!(b.runs[0].dir.starts_with("/elsewhere/runs"));
    let unique: BTreeSet<_> = ids(&a).into_iter().collect();
    assert_eq!(unique.len(), 6);
    for r in &a.runs {
        assert_eq!(r.config.model.preset, "tiny");
        assert!(r.config.run.max_steps > 0 && r.config.run.max_steps <= 50);
        assert!(r.config.data.synthetic_clips <= 128);
        assert_eq!(r.config.run.dir, r.dir);
    }
}

#[test]
fn ids_change_with_the_config() {
    let d = tempfile::tempdir().unwrap();
    let p = write_sweep(d.path(), AXES);
    let a = Plan::load(&p, None).unwrap();
    let p2 = write_sweep(
        d.path(),
        &format!("[base]\nrun = {{ max_steps = 7 }}\n{AXES}"),
    );
    let b = Plan::load(&p2, None).unwrap();
    assert_ne!(a.runs[0].id, b.runs[0].id);
    assert_ne!(a.hash, b.hash);
}

fn load_err(body: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let p = write_sweep(d.path(), body);
    match Plan::load(&p, None) {
        Ok(_) => panic!("expected an error for:\n{body}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_axis_value_is_an_error() {
    let e = load_err(&AXES.replace("\"mid\"]", "\"middle\"]"));
    assert!(e.contains("model.fusion") && e.contains("middle"), "{e}");
    let e = load_err(&format!("{AXES}\n[[exclude]]\nfusion = \"latte\"\n"));
    assert_mentions(&e, &["unknown axis value \"latte\"", "fusion"]);
    let e = load_err(&format!("{AXES}\n[[include]]\nfusoin = \"late\"\n"));
    assert!(e.contains("unknown axis \"fusoin\""), "{e}");
}

#[test]
fn config_key_typo_is_an_error() {
    let e = load_err(&format!("[base]\noptim = {{ global_bacth = 8 }}\n{AXES}"));
    assert_mentions(&e, &["optim.global_bacth", "unknown key"]);
    let e = load_err(&AXES.replace("model.fusion", "model.fushion"));
    assert!(e.contains("model.fushion"), "{e}");
    let e = load_err(&format!("[sweep2]\n{AXES}"));
    assert!(e.contains("sweep2"), "{e}");
}

#[test]
fn duplicate_configs_are_an_error() {
    let axes = AXES.replace("values = [1, 2]", "values = [1, 2]\n[[axes]]\nname = \"x\"\nkey = \"run.log_every\"\nvalues = [3]\n[[axes]]\nname = \"y\"\nkey = \"run.log_every\"\nvalues = [4, 5]");
    let e = load_err(&axes.replace("values = [4, 5]", "values = [4, 5]\nset.4 = {}\nset.5 = {}"));
    assert!(e.contains("resolve to the same config"), "{e}");
}

#[test]
fn missing_dataset_root_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let body = format!(
        "[base]\ndata = {{ root = \"/nonexistent/hr-data\", synthetic_clips = 0 }}\n{AXES}"
    );
    let p = write_sweep(d.path(), &body);
    let plan = Plan::load(&p, None).unwrap();
    let e = plan.check_data().unwrap_err();
    assert!(matches!(e, SweepError::MissingData { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/hr-data"), "{e}");
}

#[test]
fn a_changed_sweep_is_detected_by_its_hash() {
    let d = tempfile::tempdir().unwrap();
    let a = Plan::load(&write_sweep(d.path(), AXES), None).unwrap();
    let b = Plan::load(
        &write_sweep(d.path(), &AXES.replace("[1, 2]", "[1, 3]")),
        None,
    )
    .unwrap();
    let state = LedgerState {
        last_plan: Some((
            a.hash.clone(),
            "sweep.toml".into(),
            a.runs.iter().map(|r| r.id.clone()).collect(),
        )),
        ..Default::default()
    };
    check_unchanged(&a, &state).unwrap();
    let e = check_unchanged(&b, &state).unwrap_err().to_string();
    assert_mentions(
        &e,
        &[
            "the sweep changed since it was launched",
            "--accept-changes",
        ],
    );
    assert!(e.contains("3 run(s) added"), "{e}");
}

#[test]
fn plan_command_prints_every_table1_run() {
    let d = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hr-sweep"))
        .args(["plan", sweep("table1.toml").to_str().unwrap()])
        .current_dir(d.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(": 48 runs,"), "{t}");
    let numbered = |l: &&str| l.trim_start().starts_with(|c: char| c.is_ascii_digit());
    let rows: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(" seed=") && numbered(l))
        .collect();
    assert_eq!(rows.len(), 48, "{t}");
    let first = "dataset=clotho text=bert-base fusion=none metadata=none seed=1";
    assert!(
        rows[0].contains("clotho") && rows[0].ends_with(first),
        "{t}"
    );
    assert!(t.contains("0 done, 48 to launch"), "{t}");
    // The data roots do not exist here: plan says so, launch would refuse.
    assert_mentions(&t, &["`launch` would fail here", "/data/hr/clotho"]);
}

#[test]
fn eval_device_is_checked() {
    let e = load_err(&format!("{AXES}\n[eval]\ndevice = \"gpu0\"\n"));
    assert!(e.contains("[eval] device \"gpu0\""), "{e}");
    let d = tempfile::tempdir().unwrap();
    for ok in ["cpu", "cuda", "cuda:1"] {
        let p = write_sweep(d.path(), &format!("{AXES}\n[eval]\ndevice = \"{ok}\"\n"));
        assert!(Plan::load(&p, None).is_ok(), "{ok}");
    }
}

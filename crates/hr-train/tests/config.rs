//! Config parsing, overrides and errors that name the key.

use hr_models::fusion::FusionKind;
use hr_train::config::{apply_override, group_prefixes, NonFinitePolicy};
use hr_train::{TrainConfig, TrainError};

fn key_of(r: hr_train::Result<TrainConfig>) -> String {
    match r {
        Err(TrainError::Config { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn file_and_overrides_are_applied() {
    let text = "[model]\nfusion = \"mid\"\n[optim]\nepochs = 3\n[optim.lr.text]\nmax = 1e-4\n";
    let set = vec![
        "optim.global_batch=16".to_string(),
        "optim.lr.audio_cnn.max=3e-4".to_string(),
        "run.non_finite_loss=stop".to_string(),
        "data.root=/tmp/x".to_string(),
    ];
    let c = TrainConfig::from_toml_str(text, &set).unwrap();
    assert_eq!(c.model.fusion, FusionKind::Mid);
    assert_eq!(c.optim.epochs, 3);
    assert_eq!(c.optim.global_batch, 16);
    assert_eq!(c.optim.lr.text.max, 1e-4);
    assert_eq!(c.optim.lr.audio_cnn.max, 3e-4);
    assert_eq!(c.optim.lr.audio_cnn.min, 1e-7);
    assert_eq!(c.run.non_finite_loss, NonFinitePolicy::Stop);
    assert_eq!(c.data.root, "/tmp/x");
}

#[test]
fn an_override_wins_over_the_file() {
    let c =
        TrainConfig::from_toml_str("[optim]\nepochs = 3\n", &["optim.epochs=5".into()]).unwrap();
    assert_eq!(c.optim.epochs, 5);
}

#[test]
fn typos_name_the_key() {
    assert_eq!(
        key_of(TrainConfig::from_toml_str("[optim]\nepochz = 3\n", &[])),
        "optim.epochz"
    );
    assert_eq!(
        key_of(TrainConfig::from_toml_str(
            "",
            &["optim.lr.txt.max=1".into()]
        )),
        "optim.lr.txt"
    );
    assert_eq!(
        key_of(TrainConfig::from_toml_str("[modle]\n", &[])),
        "modle"
    );
}

#[test]
fn wrong_types_name_the_key() {
    assert_eq!(
        key_of(TrainConfig::from_toml_str(
            "[optim]\nepochs = \"three\"\n",
            &[]
        )),
        "optim.epochs"
    );
    assert_eq!(
        key_of(TrainConfig::from_toml_str("", &["eval.split=3".into()])),
        "eval.split"
    );
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        ("optim.rampdown_stop=0.5", "optim.rampdown_stop"),
        ("optim.global_batch=1", "optim.global_batch"),
        ("optim.lr.text_proj.min=1.0", "optim.lr.text_proj"),
        ("model.preset=huge", "model.preset"),
        ("model.tau=0", "model.tau"),
        ("run.device=tpu", "run.device"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("model.fusion=midd", "model.fusion"),
    ];
    for (set, key) in cases {
        assert_eq!(
            key_of(TrainConfig::from_toml_str("", &[set.to_string()])),
            key,
            "{set}"
        );
    }
}

#[test]
fn malformed_override_is_rejected() {
    let mut t = toml::Table::new();
    assert!(apply_override(&mut t, "optim.epochs").is_err());
    assert!(apply_override(&mut t, "optim..epochs=1").is_err());
}

#[test]
fn resolved_config_round_trips() {
    let c = TrainConfig::from_toml_str(
        "",
        &["model.metadata=labels".into(), "data.bad_rows=skip".into()],
    )
    .unwrap();
    let back = TrainConfig::from_toml_str(&c.to_toml().unwrap(), &[]).unwrap();
    assert_eq!(c, back);
    assert_eq!(c.hash().unwrap(), back.hash().unwrap());
}

#[test]
fn every_group_has_prefixes() {
    for (name, _) in TrainConfig::default().lr_groups() {
        assert!(!group_prefixes(name).is_empty(), "{name}");
    }
}

#[test]
fn shipped_demo_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/experiments/demo.toml");
    TrainConfig::from_file(&path, &[]).unwrap();
}

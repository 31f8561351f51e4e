//! `hr-train import-weights efficientat`: a real `torch.save` state dict (made by
//! tools/gen_efficientat_pt.py) converts to safetensors with EfficientAT names and exact values,
//! loads into the retriever's CNN, and anything that is not a plain state dict is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use hr_models::mobilenet::{MobileNetConfig, MobileNetV3, Part};
use hr_nn::io::read_safetensors;
use hr_nn::ParamStore;
use hr_tensor::testing::reference_fixture;
use hr_tensor::Rng;
use hr_train::import::import_efficientat;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn efficientat_pt_imports_with_its_names_and_values_and_loads_into_the_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mn04.safetensors");
    let s = import_efficientat(&data("mn04_as_state_dict.pt"), &out).unwrap();
    assert_eq!((s.model.as_str(), s.has_head), ("mn04", true));
    let got = read_safetensors(&out).unwrap().tensors;
    assert_eq!(got.len(), s.tensors);
    assert!(got.keys().all(|k| !k.ends_with("num_batches_tracked")));
    let reference = read_safetensors(&reference_fixture("mobilenetv3_mn04.safetensors")).unwrap();
    let mut compared = 0;
    for (k, t) in &reference.tensors {
        if let Some(name) = k.strip_prefix("param.") {
            assert_eq!(got[name].shape(), t.shape(), "{name}");
            assert_eq!(
                got[name].to_vec_f32().unwrap(),
                t.to_vec_f32().unwrap(),
                "{name}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, got.len());
    // The retriever's CNN has no head: the file loads, its classifier ignored.
    let mut ps = ParamStore::new();
    let cfg = MobileNetConfig::from_name("mn04").unwrap();
    let part = Part::Backbone;
    let cnn = MobileNetV3::with_prefix(&mut ps, "audio_cnn.", part, cfg, &mut Rng::new(0)).unwrap();
    cnn.load_efficientat(&mut ps, &out).unwrap();
    let id = ps.id("audio_cnn.features.16.0.weight").unwrap();
    let want = got["features.16.0.weight"].to_vec_f32().unwrap();
    assert_eq!(ps.value(id).to_vec_f32().unwrap(), want);
}

#[test]
fn the_cli_converts_and_refuses_what_is_not_a_plain_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let bin = env!("CARGO_BIN_EXE_hr-train");
    let run = |src: &Path| {
        Command::new(bin)
            .args(["import-weights", "efficientat"])
            .arg(src)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let ok = run(&data("mn04_as_state_dict.pt"));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && text.contains("mn04 layout"),
        "{text}"
    );

    std::fs::remove_file(&out).unwrap();
    let bad = run(&data("not_a_state_dict.pt"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    for key in [
        "`model`",
        "`optimizer`",
        "`epoch`",
        "not_a_state_dict.pt",
        "state_dict()",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    assert!(!out.exists(), "nothing written on error");

    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a zip").unwrap();
    let err = String::from_utf8_lossy(&run(&junk).stderr).to_string();
    assert!(err.contains("junk.pt") && err.contains("PyTorch"), "{err}");
}

#[test]
fn a_state_dict_of_another_layout_lists_its_differences() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let err = import_efficientat(&data("partial_state_dict.pt"), &out)
        .unwrap_err()
        .to_string();
    for part in [
        "partial_state_dict.pt",
        "not an EfficientAT",
        "missing `features.1.",
        "unexpected `extra.weight`",
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }
    assert!(!out.exists());
}

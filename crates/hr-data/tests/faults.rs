//! A full disk while `prepare` writes a dataset: the command fails with an error naming the
//! file, the folder never looks like a finished dataset (the manifest comes last), and running
//! it again writes the same dataset as an undisturbed run. `HR_RELIABILITY_TRIALS` trials
//! (default 3; docs/RELIABILITY.md has 20), random file and failure point.

use hr_core::faults::{arm, disarm, DiskFault};
use hr_core::Rng;

fn manifest_text(root: &std::path::Path) -> String {
    std::fs::read_to_string(root.join("manifest.json")).unwrap()
}

#[test]
fn a_failed_prepare_never_leaves_a_dataset_that_looks_finished() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let d = tempfile::tempdir().unwrap();
    let clean = d.path().join("clean");
    hr_data::synthetic::prepare(&clean, 12, 4, Some(4), &|_| {}).unwrap();
    for t in 0..trials {
        let mut rng = Rng::from_parts(&[0x9e9a7e, t]);
        let out = d.path().join(format!("trial-{t}"));
        // The durable writes of a prepare: tokenizer.json, then manifest.json (last).
        let nth = rng.below(2);
        let fraction = rng.uniform();
        arm(DiskFault {
            under: out.clone(),
            nth,
            fraction,
        });
        let e = hr_data::synthetic::prepare(&out, 12, 4, Some(4), &|_| {}).unwrap_err();
        let msg = e.to_string();
        assert_eq!(disarm(&out), 0, "trial {t}: the fault struck");
        assert!(
            msg.contains("No space left") && msg.contains(&*out.display().to_string()),
            "trial {t}: {msg}"
        );
        assert!(
            !out.join("manifest.json").exists(),
            "trial {t}: no manifest after a failure"
        );
        let open = hr_data::open_dataset(out.to_str().unwrap())
            .err()
            .map(|e| e.to_string());
        assert!(
            open.is_some_and(|m| m.contains("manifest.json")),
            "trial {t}"
        );
        let tmp: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(tmp.is_empty(), "trial {t}: temporary files left: {tmp:?}");
        // Space is back: the same command finishes the same dataset.
        hr_data::synthetic::prepare(&out, 12, 4, Some(4), &|_| {}).unwrap();
        assert_eq!(
            manifest_text(&out).replace(&*out.display().to_string(), ""),
            manifest_text(&clean).replace(&*clean.display().to_string(), ""),
            "trial {t}"
        );
    }
    println!("prepare disk faults: {trials} trials, none left a manifest, every rerun completed");
}

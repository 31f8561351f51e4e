//! Replays the committed corpus of every fuzz target (`fuzz/corpus/TARGET/`, the seeds and
//! what the campaigns kept) and every input that once crashed (`fuzz/regressions/TARGET/`)
//! through the same entry points, on the stable toolchain: deterministic, no randomness. Any
//! panic fails the test, naming the target and the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Panics seen during the replay: inside dependencies (caught at our boundary and returned as
/// typed errors) or escaping an entry point (a failure). Counted, not printed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_input_gives_a_value_or_a_typed_error() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    let mut panics = Vec::new();
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Ordering::Relaxed);
    }));
    for (name, entry) in hr_fuzz::TARGETS {
        let files: Vec<PathBuf> = ["corpus", "regressions"]
            .iter()
            .flat_map(|kind| inputs(&fuzz.join(kind).join(name)))
            .collect();
        assert!(
            !files.is_empty(),
            "target {name} has no corpus in fuzz/corpus/{name}"
        );
        for f in files {
            // A campaign running beside the test may remove a file it just minimised away.
            let Ok(data) = std::fs::read(&f) else {
                continue;
            };
            if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                panics.push(format!("{name}: {}", f.display()));
            }
            replayed += 1;
        }
    }
    let _ = std::panic::take_hook();
    let caught = PANICS.load(Ordering::Relaxed) - panics.len();
    println!(
        "replayed {replayed} inputs of {} targets; {caught} panics inside dependencies were \
         caught at our boundary and returned as typed errors",
        hr_fuzz::TARGETS.len()
    );
    assert!(panics.is_empty(), "panicked on:\n{}", panics.join("\n"));
}

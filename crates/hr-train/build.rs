//! Embeds the git commit the binaries were built from (`HR_GIT_COMMIT`; "unknown" outside a git
//! checkout) for the run provenance record.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HR_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit or a checkout); both paths are relative to this crate.
    for p in ["../../.git/HEAD", "../../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={p}");
    }
}

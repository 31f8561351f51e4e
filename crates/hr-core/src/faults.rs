//! Disk-fault injection for the reliability tests: the durable writes of the workspace
//! ([`crate::write_atomic`] and [`crate::append_durable`]) ask here before writing, and an armed
//! fault makes one of them fail part-way, after a chosen number of bytes, with `ENOSPC` ("No
//! space left on device"), as a full disk would. Faults are scoped to a folder, so tests running
//! in parallel threads do not see each other's; nothing is armed in normal runs (one relaxed
//! atomic load per write).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where and when a write fails.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskFault {
    /// Only writes of files under this folder count.
    pub under: PathBuf,
    /// The fault strikes the `nth` counted write from now (0: the next one).
    pub nth: usize,
    /// It writes this fraction (0.0..=1.0) of the bytes, then fails.
    pub fraction: f64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAULTS: Mutex<Vec<DiskFault>> = Mutex::new(Vec::new());

/// Arms `fault` (several may be armed, for different folders).
pub fn arm(fault: DiskFault) {
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    f.push(fault);
    ARMED.store(true, Ordering::Relaxed);
}

/// Disarms every fault under `under`; returns how many had not struck.
pub fn disarm(under: &Path) -> usize {
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    let before = f.len();
    f.retain(|x| !x.under.starts_with(under));
    ARMED.store(!f.is_empty(), Ordering::Relaxed);
    before - f.len()
}

/// For a durable write of `len` bytes to `path`: `Some(n)` when an armed fault strikes it
/// (write `n` bytes, then fail with [`no_space`]), else `None`. A fault strikes once.
pub fn strike(path: &Path, len: usize) -> Option<usize> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    let i = f.iter().position(|x| path.starts_with(&x.under))?;
    if f[i].nth > 0 {
        f[i].nth -= 1;
        return None;
    }
    let fault = f.remove(i);
    ARMED.store(!f.is_empty(), Ordering::Relaxed);
    Some(((len as f64) * fault.fraction.clamp(0.0, 1.0)) as usize)
}

/// The error a full disk gives.
pub fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(28) // ENOSPC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_strikes_its_nth_write_under_its_folder_once() {
        let under = PathBuf::from("/faults-test/a");
        arm(DiskFault {
            under: under.clone(),
            nth: 1,
            fraction: 0.5,
        });
        assert_eq!(
            strike(Path::new("/faults-test/b/x"), 10),
            None,
            "other folder"
        );
        assert_eq!(strike(&under.join("x"), 10), None, "the 0th write");
        assert_eq!(strike(&under.join("y"), 10), Some(5));
        assert_eq!(strike(&under.join("z"), 10), None, "struck once");
        assert_eq!(disarm(&under), 0);
        assert!(no_space().to_string().contains("No space left"));
    }
}

//! The workspace's one atomic write.
//!
//! Durability rule: the bytes go to a temporary file in the target's folder, which is fsynced
//! and renamed over the target; then the folder itself is fsynced so that the rename survives a
//! crash. Every step is required: a failure of any of them (including the folder fsync) is an
//! error naming the path, the temporary file is removed, and the target keeps its old content.
//! The parent folder must exist (callers create it: a missing folder is usually a wrong path,
//! not something to paper over). Journals (the sweep ledger) append through [`append_durable`].
//! Both consult [`crate::faults`], where the reliability tests inject a full disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What marks a temporary file of [`write_atomic`]: `.NAME.tmp-PID`.
const TMP_MARK: &str = ".tmp-";

/// Removes the temporary files that writers killed mid-write (other processes than this one)
/// left in `dir`, so the next save does not accumulate them; returns how many. The sole writer
/// of a folder (a run's rank 0 for its checkpoints) calls it before writing there.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize, FileError> {
    let own = format!("{TMP_MARK}{}", std::process::id());
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FileError::io(dir)(e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(TMP_MARK) && !name.ends_with(&own) {
            std::fs::remove_file(e.path()).map_err(FileError::io(&e.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes `bytes` to `path` atomically (see the module doc for the durability rule): after a
/// crash the file holds either its old content or `bytes`, never a torn mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(FileError::io(&tmp))?;
        if let Some(n) = crate::faults::strike(path, bytes.len()) {
            f.write_all(&bytes[..n]).map_err(FileError::io(&tmp))?;
            return Err(FileError::io(&tmp)(crate::faults::no_space()));
        }
        f.write_all(bytes).map_err(FileError::io(&tmp))?;
        f.sync_all().map_err(FileError::io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(FileError::io(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Appends `bytes` to the journal `f` (the file at `path`) durably: written, then its data
/// fsynced. On failure the file is cut back to its length before the append, so a failed
/// append leaves no torn line for the next one to follow (a crash mid-append can still leave
/// one: journal readers drop a torn last line).
pub fn append_durable(f: &mut File, path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let before = f.metadata().map_err(FileError::io(path))?.len();
    let result = match crate::faults::strike(path, bytes.len()) {
        Some(n) => f
            .write_all(&bytes[..n])
            .and_then(|()| Err(crate::faults::no_space())),
        None => f.write_all(bytes).and_then(|()| f.sync_data()),
    };
    result.map_err(|e| {
        let _ = f.set_len(before).and_then(|()| f.sync_data());
        FileError::io(path)(e)
    })
}

/// Fsyncs a folder, making a rename or a new entry in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::io(dir))
}

/// A file that could not be read or written, or whose content is not what it should be; the
/// message starts with the file. The crates' own errors carry it as their `File` variant.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has unexpected content.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

impl FileError {
    /// An I/O error on `path`, for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.into();
        move |source| FileError::Io { path, source }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. } | FileError::Format { path, .. } => path,
        }
    }

    /// Unexpected content in `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> FileError {
        FileError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hr-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let d = scratch("replace");
        let p = d.join("a.json");
        write_atomic(&p, b"old").expect("first write");
        write_atomic(&p, b"new").expect("second write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(&d).expect("list").collect();
        assert_eq!(names.len(), 1, "only the target remains");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temporaries_of_other_processes_are_removed() {
        let d = scratch("stale");
        std::fs::write(d.join(".model.safetensors.tmp-4242424"), b"torn").expect("write");
        std::fs::write(d.join(format!(".mine.tmp-{}", std::process::id())), b"x").expect("write");
        std::fs::write(d.join("model.safetensors"), b"ok").expect("write");
        assert_eq!(remove_stale_temporaries(&d).expect("clean"), 1);
        let mut left: Vec<_> = std::fs::read_dir(&d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!(".mine.tmp-{}", std::process::id()),
                "model.safetensors".into()
            ]
        );
        assert_eq!(
            remove_stale_temporaries(&d.join("absent")).expect("absent"),
            0
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_temporary_file() {
        let d = scratch("missing");
        let p = d.join("no/such/folder/a.json");
        let e = write_atomic(&p, b"x").expect_err("no parent folder");
        assert!(e.path().starts_with(d.join("no/such/folder")), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_content() {
        let d = scratch("rename");
        // The target is a non-empty folder: the rename fails, the temporary file is removed.
        let p = d.join("target");
        std::fs::create_dir_all(p.join("inside")).expect("folder");
        let e = write_atomic(&p, b"x").expect_err("rename over a folder");
        assert_eq!(e.path(), p, "{e}");
        assert!(p.join("inside").is_dir());
        let left: Vec<_> = std::fs::read_dir(&d).expect("list").collect();
        assert_eq!(left.len(), 1, "temporary file removed");
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! Assertions the workspace's tests share.

/// Asserts that `text` (an error message, a log, a command's output) contains every one of
/// `parts`; the failure names the missing parts and shows the whole text.
#[track_caller]
pub fn assert_mentions(text: &str, parts: &[&str]) {
    let missing: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| !text.contains(p))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in: {text}");
}

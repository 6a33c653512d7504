//! Directories that hold keys and state: created readable by their owner only.

use std::path::Path;

/// Creates `path` (and its parents) with mode 0700.
pub(crate) fn make_private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

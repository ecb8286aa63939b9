//! The store's records, written so that a crash at any moment leaves
//! either the old record or the new one: write a temporary file, fsync
//! it, rename it over the record, fsync the directory. crispd's own
//! records (`crispd::persist`) are written by the same code.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Replace `path` with `data` durably (fsynced file and directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_replacing(path, data, true)
}

/// Replace `path` with `data` through a temporary file and a rename, so
/// that a reader sees the old file or the new one; with `durable`, also
/// fsync the file before the rename and the directory after it (crispd's
/// records under the runtime directory skip that: see
/// `crispd::persist::write_runtime`).
pub fn write_replacing(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        // A full disk fails here: the partial file would hold on to the
        // space it took until the next start's sweep.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

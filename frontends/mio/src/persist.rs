//! Records under the state directory, written so that a crash at any
//! moment leaves either the old record or the new one: write a temporary
//! file, fsync it, rename it over the record, fsync the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write(path, data, true)
}

/// For files under the runtime directory (`/run/crisp`, a tmpfs that does
/// not outlive the machine, like the monitors, mounts and namespaces these
/// files describe): replaced atomically (temporary file, rename), so a
/// crispd crash at any moment leaves the old file or the new one, but not
/// fsynced: a process crash loses nothing from the page cache, and after
/// a power loss there is nothing left for them to describe. Records that
/// must outlive a reboot go through [`write_atomic`].
pub fn write_runtime(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write(path, data, false)
}

fn write(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_record_whole() {
        let dir = std::env::temp_dir().join(format!("crisp-persist-{}", std::process::id()));
        let p = dir.join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1);
        write_runtime(&p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Records under the state directory, written so that a crash at any
//! moment leaves either the old record or the new one: write a temporary
//! file, fsync it, rename it over the record, fsync the directory.
//!
//! The CRI records (a pod's or container's state, rewritten at each state
//! change) also change in place, with one `fdatasync` instead of two
//! journal commits: see [`write_slotted`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

// Whole-file replacement is the image store's, shared.
use crisp_image::persist::write_replacing;

pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_replacing(path, data, true)
}

/// For files under the runtime directory (`/run/crisp`, a tmpfs that does
/// not outlive the machine, like the monitors, mounts and namespaces these
/// files describe): replaced atomically (temporary file, rename), so a
/// crispd crash at any moment leaves the old file or the new one, but not
/// fsynced: a process crash loses nothing from the page cache, and after
/// a power loss there is nothing left for them to describe. Records that
/// must outlive a reboot go through [`write_atomic`].
pub fn write_runtime(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_replacing(path, data, false)
}

/// The first bytes of a slot. A protobuf message never starts with 0xFF
/// (field 31 with wire type 7 does not exist), so a record written whole by
/// an earlier crispd, plain protobuf, is told apart by its first byte.
const SLOT_MAGIC: [u8; 4] = [0xFF, b'C', b'R', b'1'];
/// magic, sequence number (u64), payload length (u32), CRC-32 (u32) of
/// the sequence number, the length and the payload; little endian.
const SLOT_HEADER: usize = 20;
const SLOT_ALIGN: usize = 4096;

/// Write the record at `path` durably, in place when it can: the file holds
/// two slots of equal size, each a checksummed copy of the record with a
/// sequence number, and the newest valid slot is the record. An update
/// writes the other slot and `fdatasync`s it: the file keeps its size and
/// blocks, so no metadata changes (one device flush, not a journal commit
/// for the file and another for a rename). A crash mid-write leaves that
/// slot torn, its checksum wrong, and the other slot is the record.
///
/// A new record, one that outgrew its slots, or one in the whole-file
/// format of earlier versions is written whole, as [`write_atomic`] does,
/// with room to grow (slots of at least twice the record).
///
/// Writes to one record must not run concurrently (the CRI state machine
/// keeps at most one write per record in flight).
pub fn write_slotted(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(f) = open_existing(path)? {
        let mut image = Vec::new();
        let len = f.metadata()?.len();
        if len <= 16 << 20 {
            image.resize(len as usize, 0);
            f.read_exact_at(&mut image, 0)?;
            if let Some((slot_size, current, seq)) = slot_layout(&image) {
                if SLOT_HEADER + data.len() <= slot_size {
                    let other = 1 - current;
                    f.write_all_at(&slot(seq + 1, data), (other * slot_size) as u64)?;
                    return f.sync_data();
                }
            }
        }
    }
    let slot_size = (SLOT_HEADER + data.len())
        .saturating_mul(2)
        .div_ceil(SLOT_ALIGN)
        .saturating_mul(SLOT_ALIGN);
    let mut image = vec![0u8; 2 * slot_size];
    let first = slot(1, data);
    image[..first.len()].copy_from_slice(&first);
    write_atomic(path, &image)
}

fn open_existing(path: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A slot's bytes: header and payload (the rest of the slot is left as it
/// is; the length says where the payload ends).
fn slot(seq: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_HEADER + data.len());
    out.extend_from_slice(&SLOT_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&slot_crc(seq, data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn slot_crc(seq: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&(data.len() as u32).to_le_bytes());
    h.update(data);
    h.finalize()
}

/// The payload and sequence number of a valid slot.
fn parse_slot(slot: &[u8]) -> Option<(u64, &[u8])> {
    if slot.len() < SLOT_HEADER || slot[..4] != SLOT_MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(slot[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(slot[16..20].try_into().ok()?);
    let data = slot.get(SLOT_HEADER..SLOT_HEADER.checked_add(len)?)?;
    (slot_crc(seq, data) == crc).then_some((seq, data))
}

/// The newest valid slot of a two-slot image: (index, sequence, payload).
fn newest_slot(image: &[u8]) -> Option<(usize, u64, &[u8])> {
    if image.first() != Some(&SLOT_MAGIC[0]) || image.len() % 2 != 0 {
        return None;
    }
    let half = image.len() / 2;
    let a = parse_slot(&image[..half]).map(|(s, d)| (0, s, d));
    let b = parse_slot(&image[half..]).map(|(s, d)| (1, s, d));
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Slot size, the slot holding the record and its sequence number, when
/// `image` is a two-slot file with a valid slot.
fn slot_layout(image: &[u8]) -> Option<(usize, usize, u64)> {
    let (index, seq, _) = newest_slot(image)?;
    Some((image.len() / 2, index, seq))
}

/// The record in a file written by [`write_slotted`] (or whole, by an
/// earlier crispd). An error says why the file holds no record.
pub fn read_slotted(image: &[u8]) -> Result<&[u8], &'static str> {
    if image.first() != Some(&SLOT_MAGIC[0]) {
        // Written whole, before records had slots.
        return Ok(image);
    }
    if image.len() % 2 != 0 || image.len() < 2 * SLOT_HEADER {
        return Err("not a two-slot record file (odd or short length)");
    }
    newest_slot(image)
        .map(|(_, _, data)| data)
        .ok_or("neither slot of the record file is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("crisp-slots-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(p: &Path) -> Vec<u8> {
        read_slotted(&fs::read(p).unwrap()).unwrap().to_vec()
    }

    #[test]
    fn slotted_updates_stay_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = scratch("inplace");
        let p = dir.join("container-x");
        write_slotted(&p, b"created").unwrap();
        assert_eq!(read(&p), b"created");
        let before = fs::metadata(&p).unwrap();
        assert_eq!(before.len(), 2 * 4096);
        for (i, v) in ["running", "exited", "exited again, longer"]
            .iter()
            .enumerate()
        {
            write_slotted(&p, v.as_bytes()).unwrap();
            assert_eq!(read(&p), v.as_bytes(), "update {i}");
            let after = fs::metadata(&p).unwrap();
            assert_eq!((after.ino(), after.len()), (before.ino(), before.len()));
        }
        // Only the record file: no temporary left by an in-place write.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_slot_leaves_the_previous_record() {
        let dir = scratch("torn");
        let p = dir.join("pod-x");
        write_slotted(&p, b"one").unwrap();
        write_slotted(&p, b"two").unwrap(); // slot 1, seq 2
        let mut image = fs::read(&p).unwrap();
        let half = image.len() / 2;
        // The crash hit the write of "two": its payload only half there.
        image[half + SLOT_HEADER + 1] ^= 0xFF;
        fs::write(&p, &image).unwrap();
        assert_eq!(read(&p), b"one");
        // The next write goes to the torn slot, not over the good one.
        write_slotted(&p, b"three").unwrap();
        let image = fs::read(&p).unwrap();
        assert_eq!(parse_slot(&image[..half]).unwrap(), (1, &b"one"[..]));
        assert_eq!(parse_slot(&image[half..]).unwrap(), (2, &b"three"[..]));
        // A torn header (not the magic) is as good as no slot.
        let mut image = image;
        image[half] = 0;
        assert_eq!(read_slotted(&image).unwrap(), b"one");
        image[0] = 0xFF;
        image[1] = 0;
        assert!(read_slotted(&image).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whole_records_of_earlier_versions_are_read_and_converted() {
        let dir = scratch("legacy");
        let p = dir.join("container-x");
        // A protobuf message as an earlier crispd wrote it, whole.
        let legacy = [0x0a, 0x03, b'a', b'b', b'c'];
        write_atomic(&p, &legacy).unwrap();
        assert_eq!(read(&p), legacy);
        write_slotted(&p, b"now slotted").unwrap();
        assert_eq!(read(&p), b"now slotted");
        assert_eq!(fs::read(&p).unwrap()[..4], SLOT_MAGIC);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_that_outgrows_its_slots_is_rewritten_larger() {
        let dir = scratch("grow");
        let p = dir.join("container-x");
        write_slotted(&p, &[1u8; 100]).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 2 * 4096);
        let big = vec![7u8; 5000];
        write_slotted(&p, &big).unwrap();
        assert_eq!(read(&p), big);
        assert_eq!(fs::metadata(&p).unwrap().len(), 2 * 12288);
        write_slotted(&p, b"small again").unwrap();
        assert_eq!(read(&p), b"small again");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn any_bytes_read_without_panic() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        for n in 0..2000usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let mut image: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            if n % 2 == 0 && !image.is_empty() {
                image[0] = 0xFF;
            }
            let _ = read_slotted(&image);
        }
    }
}

//! crispd's CRI record files (two checksummed slots, or a whole record
//! from an earlier version) read from arbitrary bytes: never a panic, and
//! a record found is inside the image, within one slot.

pub fn record_slots(data: &[u8]) {
    if let Ok(record) = crispd::persist::read_slotted(data) {
        if data.first() == Some(&0xFF) {
            assert!(
                record.len() <= data.len() / 2,
                "a record larger than a slot"
            );
        } else {
            assert_eq!(record, data, "a whole record is the file");
        }
    }
}

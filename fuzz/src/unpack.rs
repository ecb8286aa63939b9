//! crisp-image's layer unpacker on arbitrary archives: unpacked into a
//! scratch directory, nothing may appear outside it (`fuzz_unpack` checks
//! and panics otherwise).

pub fn image_unpack(data: &[u8]) {
    crisp_image::unpack::fuzz_unpack(data);
}

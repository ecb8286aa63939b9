//! Sequences of CRI calls, host outcomes and notices against the core's
//! pod and container state machine, with a simulated host: the core's own
//! driver (`crisp_core::cri::sim`) checks every CRI invariant after each
//! step. The first byte picks checked sequences or raw, unchecked inputs.

pub fn cri_lifecycle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let result = if mode & 1 == 0 {
        crisp_core::cri::sim::fuzz(rest)
    } else {
        crisp_core::cri::sim::fuzz_raw(rest)
    };
    if let Err(e) = result {
        panic!("CRI invariant broken: {e}");
    }
}

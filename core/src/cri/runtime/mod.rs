//! The state machine proper, split by concern (see each file).

mod ops;

pub(crate) use ops::{Ctr, CtrState, Pod, PodState};
pub use ops::{
    Runtime, START_ERROR_EXIT_CODE, START_ERROR_REASON, UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON,
};

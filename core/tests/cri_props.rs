//! Property tests of the CRI state machine: random sequences of CRI calls,
//! action outcomes (with injected failures), container and sandbox deaths,
//! queries and restarts, run through `cri::sim`, which checks after every
//! step that names are unique, no container outlives its sandbox, states
//! only move along legal transitions, every action is answered once and
//! every call gets one reply; and at the end that stop/remove calls are
//! idempotent and that a runtime restored from the records lists the same.

use crisp_core::cri::sim::{self, Sim, Step};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        any::<(u8, u8, u8)>().prop_map(|(op, a, b)| Step::from_bytes(op, a, b)),
        0..250,
    )
}

/// Steps biased towards answering (so more objects get far in their life).
fn busy_steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<(u8, u8, u8)>().prop_map(|(op, a, b)| Step::from_bytes(op, a, b)),
            2 => any::<u8>().prop_map(|pick| Step::Answer { pick, fail: false }),
        ],
        0..400,
    )
}

fn run(seed: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(seed);
    for (i, s) in steps.iter().enumerate() {
        sim.step(*s)
            .map_err(|e| TestCaseError::fail(format!("step {i} ({s:?}): {e}")))?;
    }
    sim.finish()
        .map_err(|e| TestCaseError::fail(format!("at the end: {e}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(seed in any::<u64>(), steps in steps()) {
        run(seed, &steps)?;
    }

    #[test]
    fn busy_sequences_keep_the_invariants(seed in any::<u64>(), steps in busy_steps()) {
        run(seed, &steps)?;
    }

    #[test]
    fn raw_inputs_never_panic_nor_corrupt(data in prop::collection::vec(any::<u8>(), 0..3000)) {
        sim::fuzz_raw(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn fuzz_entry_point_accepts_any_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        sim::fuzz(&data).map_err(TestCaseError::fail)?;
    }
}

/// The sims above must actually reach the interesting states.
#[test]
fn the_sim_reaches_deep_states() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut totals = sim::SimStats::default();
    for _ in 0..64 {
        let steps = busy_steps().new_tree(&mut runner).unwrap().current();
        let mut sim = Sim::new(7);
        for s in &steps {
            sim.step(*s).unwrap();
        }
        sim.finish().unwrap();
        let st = &sim.stats;
        totals.calls += st.calls;
        totals.errors += st.errors;
        totals.events += st.events;
        totals.failures_injected += st.failures_injected;
        totals.restarts += st.restarts;
        totals.max_pods = totals.max_pods.max(st.max_pods);
        totals.max_containers = totals.max_containers.max(st.max_containers);
    }
    eprintln!("{totals:?}");
    assert!(totals.max_pods >= 3, "{totals:?}");
    assert!(totals.max_containers >= 3, "{totals:?}");
    assert!(totals.failures_injected > 0, "{totals:?}");
    assert!(totals.restarts > 64, "{totals:?}");
    assert!(totals.events > 100, "{totals:?}");
}

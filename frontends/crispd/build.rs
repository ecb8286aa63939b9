//! Builds the tiny container monitor (`frontends/monitor/src/main.rs`): a static
//! program without libc that `crispd monitor` execs once the container is
//! created (see `pods/monitor.rs`). Plain rustc, as scripts/bench builds
//! its `stamp`: the workspace profile cannot set `panic = abort` for one
//! binary. On an architecture it has no system calls for, nothing is built
//! and crispd keeps its own monitor loop (`cfg(tiny_monitor)` unset).
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../monitor/src/main.rs");
    println!("cargo:rerun-if-changed=../monitor/src/logic.rs");
    println!("cargo:rustc-check-cfg=cfg(tiny_monitor)");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" || arch != "x86_64" {
        return;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("crispd-monitor");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "crispd_monitor",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "relocation-model=static", "-C", "strip=symbols"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .arg("-o")
        .arg(&out)
        .arg("../monitor/src/main.rs")
        .status()
        .expect("run rustc for the tiny monitor");
    assert!(status.success(), "building ../monitor/src/main.rs failed");
    println!("cargo:rustc-cfg=tiny_monitor");
}

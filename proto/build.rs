//! Compiles the CRI schema (`runtime/v1/api.proto`) and the gRPC services
//! crispd serves beside it (health, reflection) with protox (no system
//! protoc) and generates the prost types from the resulting descriptor set.
//! The encoded descriptor set is also written to OUT_DIR so the crate can
//! expose it for server reflection (and tests, fuzzers).

use std::{env, fs, path::PathBuf};

/// Every file of the schema; the CRI first.
const PROTOS: [&str; 4] = [
    "runtime/v1/api.proto",
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);

    let mut compiler = protox::Compiler::new(["."])?;
    // Source info carries the comments, which prost-build turns into docs.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    prost_build::Config::new()
        .enable_type_names()
        // Off unless the `serde` feature is on (only the benchmarks turn it
        // on, to compare prost with serde_json on the same types).
        .type_attribute(
            ".",
            "#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize))]",
        )
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

//! Generates the prost messages and tonic clients/servers for every `.proto` under `proto/`.
//!
//! protoc comes from `protoc-bin-vendored`, so a build needs no system protoc and every machine
//! compiles with the same protoc version. The file descriptor set is written next to the
//! generated code (`OUT_DIR/descriptor_set.bin`) so gRPC reflection can be added later without
//! touching this script.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/cart/v1/cart.proto",
    "proto/projection/v1/query.proto",
    "proto/runner/admin/v1/runner_admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A directory makes Cargo scan everything under it, so a new .proto file counts too.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // The protoc path goes on the prost `Config` (what the `PROTOC` variable would set) rather
    // than into the process environment: `set_var` is `unsafe` in edition 2024 and global.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("descriptor_set.bin"))
        .compile_with_config(config, PROTOS, &[PROTO_ROOT])?;
    Ok(())
}

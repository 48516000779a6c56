//! Generates the gRPC server/client code, the canonical proto3 JSON (serde) impls and the file
//! descriptor set (for reflection and the upstream JSON encoder) from `proto/`.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no system protoc.

use std::{env, error::Error, path::PathBuf};

const PROTOS: [&str; 5] = [
    "proto/wnology/v1/common.proto",
    "proto/wnology/v1/models.proto",
    "proto/wnology/v1/me.proto",
    "proto/wnology/v1/org.proto",
    "proto/wnology/v1/instance_org.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("wnology_descriptor.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` gives every message its full proto name, which the upstream JSON encoder
    // uses to find the message's descriptor.
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(
            config,
            &PROTOS.map(PathBuf::from),
            &[PathBuf::from("proto"), well_known],
        )?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        // `DisabledAt` is `false` or a date-time in the upstream JSON: hand-written serde.
        .exclude([".wnology.v1.DisabledAt"])
        .build(&[".wnology"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

//! Generates the messages and gRPC clients, the gRPC servers, the canonical proto3 JSON (serde)
//! impls and the file descriptor set (for reflection and the upstream JSON encoder) from
//! `proto/`.
//!
//! The servers are generated from the same descriptors with `tonic_build::manual` rather than
//! by tonic-prost-build, only so that each method returns `crate::reply::Encoded<Output>` (its
//! answer's protobuf bytes, encoded once and shared with the cache) through
//! `crate::reply::ReplyCodec`. Clients are the usual prost ones: the wire is the same.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no system protoc.
//!
//! A second descriptor set, of the vendored `proto/google/rpc` files (`google.rpc.Status` and
//! the error details), is only served by reflection, so that tools decode the details; their
//! Rust types are tonic-types', so no code is generated for them.

use std::{env, error::Error, path::Path, path::PathBuf, process::Command};

use prost::Message;
use prost_types::{FileDescriptorSet, ServiceDescriptorProto, SourceCodeInfo};

/// The vendored googleapis files that reflection serves beside the contract (see
/// `proto/google/rpc/README.md`).
const GOOGLE_RPC_PROTOS: [&str; 2] = [
    "proto/google/rpc/status.proto",
    "proto/google/rpc/error_details.proto",
];

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

    google_rpc_descriptors(
        &protoc,
        &well_known,
        &out_dir.join("google_rpc_descriptor.bin"),
    )?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` gives every message its full proto name, which the upstream JSON encoder
    // uses to find the message's descriptor.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(false)
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
    fast_numbers(&out_dir.join("wnology.v1.serde.rs"))?;

    generate_servers(&descriptors, &out_dir)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

/// Makes the generated deserializers read numbers with `crate::json::Number` rather than
/// pbjson's `NumberDeserialize`, which accepts the same inputs through an untagged enum: for a
/// JSON number it first fails as a string, building (and dropping) a formatted error, which was
/// a tenth of the CPU of a cache miss on a usage read (maps of counts).
fn fast_numbers(serde_file: &Path) -> Result<(), Box<dyn Error>> {
    let generated = std::fs::read_to_string(serde_file)?;
    let patched = generated.replace(
        "::pbjson::private::NumberDeserialize",
        "crate::json::Number",
    );
    std::fs::write(serde_file, direct_number_maps(&patched))?;
    Ok(())
}

/// Maps of numbers are read into a map of wrappers and then copied into a second map: read
/// them into the field's map directly (`crate::json::NumberMap`).
fn direct_number_maps(generated: &str) -> String {
    const HEAD: &str = "map_.next_value::<std::collections::HashMap<_, crate::json::Number<";
    const TAIL: &str = ".into_iter().map(|(k,v)| (k, v.0)).collect()";
    let mut out = String::with_capacity(generated.len());
    let mut rest = generated;
    while let Some(at) = rest.find(HEAD) {
        out.push_str(&rest[..at]);
        let after = &rest[at + HEAD.len()..];
        let copied = after.split_once(">>>()?").and_then(|(value, tail)| {
            let tail = tail.trim_start().strip_prefix(TAIL)?;
            Some((value, tail))
        });
        match copied {
            Some((value, tail)) => {
                out.push_str(&format!(
                    "map_.next_value::<crate::json::NumberMap<_, {value}>>()?.0"
                ));
                rest = tail;
            }
            None => {
                out.push_str(HEAD);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Writes the descriptor set of `GOOGLE_RPC_PROTOS` and their imports (`any.proto`,
/// `duration.proto`) to `out`, under their canonical names (`google/rpc/status.proto`).
fn google_rpc_descriptors(
    protoc: &Path,
    well_known: &Path,
    out: &Path,
) -> Result<(), Box<dyn Error>> {
    let status = Command::new(protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("-I")
        .arg("proto")
        .arg("-I")
        .arg(well_known)
        .args(GOOGLE_RPC_PROTOS)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on {GOOGLE_RPC_PROTOS:?}: {status}").into());
    }
    Ok(())
}

/// Writes `wnology.v1.<Service>.rs` for each service of the `wnology.v1` package.
fn generate_servers(descriptors: &[u8], out_dir: &Path) -> Result<(), Box<dyn Error>> {
    let set = FileDescriptorSet::decode(descriptors)?;
    let mut services = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "wnology.v1") {
        for (index, service) in file.service.iter().enumerate() {
            services.push(server(service, index, file.source_code_info.as_ref())?);
        }
    }
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&services);
    Ok(())
}

fn server(
    service: &ServiceDescriptorProto,
    index: usize,
    source: Option<&SourceCodeInfo>,
) -> Result<tonic_build::manual::Service, Box<dyn Error>> {
    // Source locations: 6 = FileDescriptorProto.service, 2 = ServiceDescriptorProto.method.
    let comment = |path: &[i32]| -> Vec<String> {
        source
            .and_then(|info| info.location.iter().find(|l| l.path == path))
            .and_then(|location| location.leading_comments.as_deref())
            .map(|text| text.lines().map(|line| line.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let service_index = i32::try_from(index)?;
    let mut builder = tonic_build::manual::Service::builder()
        .name(service.name())
        .package("wnology.v1");
    for line in comment(&[6, service_index]) {
        builder = builder.comment(line);
    }
    for (index, method) in service.method.iter().enumerate() {
        let rust_type = |proto: &str| {
            proto
                .strip_prefix(".wnology.v1.")
                .map(|name| format!("crate::proto::{name}"))
                .ok_or_else(|| format!("{proto}: not a wnology.v1 message"))
        };
        let mut rpc = tonic_build::manual::Method::builder();
        for line in comment(&[6, service_index, 2, i32::try_from(index)?]) {
            rpc = rpc.comment(line);
        }
        builder = builder.method(
            rpc.name(heck::ToSnakeCase::to_snake_case(method.name()))
                .route_name(method.name())
                .input_type(rust_type(method.input_type())?)
                .output_type(format!(
                    "crate::reply::Encoded<{}>",
                    rust_type(method.output_type())?
                ))
                .codec_path("crate::reply::ReplyCodec")
                .build(),
        );
    }
    Ok(builder.build())
}

//! Generates Rust code for the .proto files under `proto/` into `OUT_DIR`, using the
//! protoc binary that the `protoc-bin-vendored` crate ships (no system protoc needed).

use std::error::Error;

/// The .proto files, relative to `PROTO_ROOT`, which is also the import root.
const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "raftkv/peer.proto",
    "raftkv/session.proto",
];
const PROTO_ROOT: &str = "proto";
/// The packages that get serde impls with the `json` feature (etcd's JSON gateway).
const JSON_PACKAGES: [&str; 5] =
    [".mvccpb", ".authpb", ".etcdserverpb", ".v3lockpb", ".v3electionpb"];

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = tonic_prost_build::Config::new();
    // Pass the vendored protoc explicitly rather than through PROTOC, so a protoc on
    // the machine (of whatever version) cannot change the generated code.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let paths: Vec<String> = PROTOS.iter().map(|p| format!("{PROTO_ROOT}/{p}")).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .build_client(true)
        .build_server(true)
        // `connect()` helpers need tonic's transport; generate them only with it.
        .build_transport(std::env::var_os("CARGO_FEATURE_TRANSPORT").is_some())
        .bytes(".")
        .compile_with_config(config, &paths, &[PROTO_ROOT.to_string()])?;

    // The `json` feature: serde impls for etcd's packages (not the peer transport's), as
    // etcd 3.4's JSON gateway reads and writes them: the .proto field names, unknown
    // fields ignored as Go's decoder does.
    if std::env::var_os("CARGO_FEATURE_JSON").is_some() {
        pbjson_build::Builder::new()
            .register_descriptors(&std::fs::read(&descriptors)?)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&JSON_PACKAGES)?;
    }
    Ok(())
}

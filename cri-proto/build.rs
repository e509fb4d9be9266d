//! Generates the CRI v1 message types and gRPC stubs at build time.
//!
//! `protox` parses the .proto in pure Rust, so neither developers nor CI need
//! a `protoc` binary; tonic-prost-build then turns the resulting descriptor
//! set into prost messages plus tonic clients and servers.

use std::path::PathBuf;

const PROTO_DIR: &str = "proto";
const API_PROTO: &str = "proto/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={API_PROTO}");

    let mut compiler = protox::Compiler::new([PROTO_DIR])?;
    // Source info carries the .proto comments into the generated rustdoc.
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file(API_PROTO)?;
    let for_codegen = compiler.file_descriptor_set();

    // A comment-free encoding for gRPC server reflection. It is taken from
    // protox's own encoder because prost-types' FieldOptions would silently
    // drop options it does not model, such as `debug_redact`.
    compiler.include_source_info(false);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("runtime.v1.descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(for_codegen)?;

    Ok(())
}

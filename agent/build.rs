//! Generates peapod's own gRPC API (`proto/peapod.proto`) at build time, the
//! same way cri-proto generates CRI: protox parses the .proto in pure Rust (no
//! `protoc` needed) and tonic-prost-build writes the messages and the tonic
//! client and server.

const PROTO_DIR: &str = "proto";
const PEAPOD_PROTO: &str = "proto/peapod.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PEAPOD_PROTO}");

    let mut compiler = protox::Compiler::new([PROTO_DIR])?;
    // Source info carries the .proto comments into the generated rustdoc.
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file(PEAPOD_PROTO)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;

    Ok(())
}

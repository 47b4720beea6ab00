//! Compiles `mesh.proto` into Rust messages (prost) and gRPC clients and servers (tonic), and
//! writes the file descriptor set that `mesh_proto::FILE_DESCRIPTOR_SET` embeds.
//!
//! protoc comes from the system (`protoc` on PATH, or the path in `$PROTOC`); on Debian it is
//! the `protobuf-compiler` package, which `scripts/setup.sh` installs.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROTO: &str = "mesh.proto";

fn main() {
    println!("cargo::rerun-if-changed={PROTO}");
    println!("cargo::rerun-if-env-changed=PROTOC");
    println!("cargo::rerun-if-env-changed=PROTOC_INCLUDE");

    if let Err(why) = check_protoc() {
        println!("cargo::error={why}");
        return;
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let result = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Payloads and header values as `bytes::Bytes`: the server hands them on without a copy.
        .bytes(".mesh.v1")
        .file_descriptor_set_path(out_dir.join("mesh_descriptor.bin"))
        .compile_protos(&[PROTO], &["."]);
    if let Err(e) = result {
        println!("cargo::error=mesh-proto: compiling {PROTO} failed: {e}");
    }
}

/// Runs `protoc --version` so that a missing compiler is reported as such, not as a
/// generated-code error further down.
fn check_protoc() -> Result<(), String> {
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let shown = protoc.to_string_lossy().into_owned();
    let hint = "install it (Debian: `apt-get install protobuf-compiler`, or run scripts/setup.sh) \
                or set PROTOC to its path";
    match Command::new(&protoc).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "mesh-proto: `{shown} --version` failed ({}): {}; {hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "mesh-proto: the protobuf compiler `{shown}` could not be run ({e}); {hint}"
        )),
    }
}

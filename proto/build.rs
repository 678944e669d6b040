//! Compiles `retort/v1/*.proto` with a vendored `protoc` (no system install needed) and writes the
//! descriptor set that the services' reflection endpoints serve.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts run single-threaded, nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["retort/v1/gateway.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("retort_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}

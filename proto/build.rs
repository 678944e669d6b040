//! Compiles every `retort/v1/*.proto` with a vendored `protoc` (no system install needed) and writes
//! the descriptor set that the services' reflection endpoints serve.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts run single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut protos: Vec<PathBuf> = std::fs::read_dir("retort/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("retort_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from(".")])?;
    println!("cargo:rerun-if-changed=retort/v1");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}

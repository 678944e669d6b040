//! `retort-bench-gateway`: the gateway benchmark. Four systems side by side, in one run, against the same
//! simulator and load generator: **direct** (client to simulator), **floor** (a bare pass-through
//! proxy, [`floor`]), **retort** (the gateway) and **litellm** (LiteLLM's proxy).
//!
//! The scenarios ([`scenarios::run`]) take base URLs, so the `bench` binary, which starts every
//! system as a child process ([`procs`]), and the smoke test, which starts the simulator and the
//! gateway in-process, run the same code.
pub mod configs;
pub mod floor;
pub mod grpc;
pub mod load;
pub mod procs;
pub mod report;
pub mod scenarios;

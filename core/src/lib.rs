//! What the trainer and the evaluator both stand on, so that neither has to import the other:
//!
//! - [`batch`]: examples into tensors, the next-token layout every objective and every
//!   evaluation reads;
//! - [`device`]: which backend a binary runs on ([`Device`], [`on_device!`]);
//! - [`alloc`]: the binaries' allocator setting;
//! - [`run_dir`]: the run directory — its layout, checkpoint sidecars with the checksums of
//!   their files, the lock a writer holds for a run's life, atomic writes;
//! - [`overrides`]: `--set key=value` on a TOML table;
//! - [`sweep`]: the sweep manifest.
//!
//! The crate knows no objective and no evaluation: it is the contract, not either side of it.

pub mod alloc;
pub mod batch;
pub mod device;
pub mod overrides;
pub mod run_dir;
pub mod sweep;

pub use batch::Batch;
pub use device::Device;

/// How the lab's binaries end: success, or the error with its causes on one line of stderr
/// (`error: ...`) and a failure code.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

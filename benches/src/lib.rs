//! Benchmarks live in `benches/`; this library holds what they share: which backends to run on.

use lab_core::Device;

/// The backends a benchmark runs on: `LAB_BENCH_DEVICES` (comma-separated `--device` names, e.g.
/// `flex,wgpu-cpu`) or, by default, flex and every GPU backend this build has (`--features wgpu`
/// adds wgpu on the default adapter, `--features cuda` adds CUDA). Criterion's own filter picks
/// benchmarks by name: `cargo bench -p benches --features wgpu --bench train_step -- wgpu/tiny`.
pub fn devices() -> Vec<Device> {
    match std::env::var("LAB_BENCH_DEVICES") {
        Ok(names) => names
            .split(',')
            .map(|name| {
                <Device as clap::ValueEnum>::from_str(name.trim(), true)
                    .unwrap_or_else(|e| panic!("LAB_BENCH_DEVICES: {e}"))
            })
            .collect(),
        Err(_) => {
            let mut devices = vec![Device::Flex];
            if cfg!(feature = "wgpu") {
                devices.push(Device::Wgpu);
            }
            if cfg!(feature = "cuda") {
                devices.push(Device::Cuda);
            }
            devices
        }
    }
}

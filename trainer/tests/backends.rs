//! The GPU backends train what the CPU backend trains. Built only with `--features wgpu`; CI runs
//! it on Mesa's lavapipe (`WgpuDevice::Cpu`, software Vulkan): `cargo test -p trainer --features
//! wgpu --test backends`.
//!
//! Both runs start from the same weights (drawn on the host, see `train::initial_model`) and see
//! the same batches, so their losses differ only by floating-point summation order (other kernels,
//! other reduction trees), which AdamW's normalised steps carry forward: measured here, 8e-7 at
//! step 5 growing to 5e-5 at step 40 (docs/log/2026-11.md, 2026-11-27). The tolerance is 20 times that, and
//! still far below what one wrong op does (the loss moves by ~0.1 per 5 steps here).
#![cfg(feature = "wgpu")]

use std::path::Path;

use burn::backend::flex::FlexDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex, Wgpu};
use trainer::{RunConfig, TrainOptions};

/// Largest |loss difference| allowed at a logged step.
const LOSS_TOLERANCE: f64 = 1e-3;

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v.get("train/loss")?.as_f64()?))
        })
        .collect()
}

#[test]
fn wgpu_on_lavapipe_matches_the_cpu_losses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let overrides = [
        "data.train=2000",
        "data.test=100",
        "schedule.steps=40",
        "schedule.warmup_steps=10",
        "schedule.log_every=5",
        "schedule.eval_every=0",
        "schedule.checkpoint_every=0",
        "eval.examples=100",
    ]
    .map(String::from);
    let config = RunConfig::load(&root.join("configs/path-star/ntp.toml"), &overrides).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions::default();
    let cpu =
        trainer::train::<Autodiff<Flex>>(&config, &dir.path().join("flex"), false, &FlexDevice, &options).unwrap();
    let gpu =
        trainer::train::<Autodiff<Wgpu>>(&config, &dir.path().join("wgpu"), false, &WgpuDevice::Cpu, &options).unwrap();

    let (a, b) = (losses(&dir.path().join("flex")), losses(&dir.path().join("wgpu")));
    assert_eq!(a.len(), 8);
    assert_eq!(a.iter().map(|p| p.0).collect::<Vec<_>>(), b.iter().map(|p| p.0).collect::<Vec<_>>());
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        eprintln!("step {step:>3}: flex {x:.6}  wgpu {y:.6}  |diff| {:.2e}", (x - y).abs());
    }
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= LOSS_TOLERANCE, "step {step}: flex {x} vs wgpu {y}");
    }
    // The evaluations decode the same way: a near tie may flip a few argmaxes, not more.
    let (r, s) = (cpu.report.unwrap(), gpu.report.unwrap());
    let (x, y) = (r.free.exact, s.free.exact);
    assert!((x - y).abs() <= 0.03, "free-running exact match: flex {x} vs wgpu {y}");
}

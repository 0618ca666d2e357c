//! Free-running decoding throughput (generated tokens/s), with and without the KV cache: 64
//! prompts of 27 tokens (the G(2,5,50) prompt length), 32 tokens generated each, the `ntf`-width
//! and tiny models, on every backend of the build (`benches::devices`).
//!
//! `cargo bench -p benches --bench decode [--features wgpu|cuda]`

use std::hint::black_box;

/// The eval binary's allocator (eval/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::backend::Backend;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eval::decode::{greedy, greedy_uncached};
use lab_core::on_device;
use models::{Decoder, GptConfig};

fn bench_model<B: Backend>(c: &mut Criterion, on: &str, device: &B::Device) {
    let (batch, prompt, new) = (64usize, 27usize, 32usize);
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|r| (0..prompt).map(|i| ((r * 31 + i * 7) % 54) as u32).collect()).collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    group.throughput(Throughput::Elements((batch * new) as u64));
    for (name, config) in [("tiny", GptConfig::tiny(54, 64)), ("ntf", GptConfig::ntf(54, 64))] {
        let model = Decoder::Gpt(config.init_seeded::<B>(0, device));
        group.bench_function(format!("{on}/{name}-kv-cache"), |b| {
            b.iter(|| black_box(greedy(&model, &refs, new, None, device)))
        });
        group.bench_function(format!("{on}/{name}-recompute"), |b| {
            b.iter(|| black_box(greedy_uncached(&model, &refs, new, None, device)))
        });
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    lab_core::alloc::keep_freed_memory();
    for device in benches::devices() {
        let on = device.name();
        on_device!(device, "benchmark", |B, dev| {
            bench_model::<B>(c, &on, &dev);
            anyhow::Ok(())
        })
        .unwrap();
    }
}

criterion_group!(benches, decoding);
criterion_main!(benches);

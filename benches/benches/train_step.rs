//! Training-step throughput (tokens/s): one `trainer::train::train_step` (forward, loss,
//! backward, global-norm clipping, AdamW) on random tokens, the same work as the PyTorch reference
//! `benches/gpt_step.py` (loss over every position, no dropout), on every backend of the
//! build (`benches::devices`).
//!
//! `cargo bench -p benches --bench train_step [--features wgpu|cuda]`; compare with
//! `python3 benches/gpt_step.py --d-model 128 --n-layers 2 --n-heads 4 --batch 64 --seq-len 32 --vocab 54`.

use std::hint::black_box;

/// The trainer's allocator (trainer/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::backend::AutodiffBackend;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lab_core::{Batch, on_device};
use models::GptConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tasks::Example;
use trainer::config::OptimizerConfig;
use trainer::objective::{LabModel, Ntp};
use trainer::optim::AdamW;
use trainer::train::train_step;

fn bench_config<B: AutodiffBackend>(
    c: &mut Criterion,
    name: &str,
    config: GptConfig,
    batch: usize,
    samples: usize,
    device: &B::Device,
) {
    let (vocab, seq) = (config.vocab_size, config.max_seq_len);
    let mut model = Some(LabModel::<B> { gpt: config.init_seeded(0, device), heads: None });
    let mut optim = AdamW::new(&OptimizerConfig::default()).init::<B, LabModel<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // prefix_len 1: every position of the sequence is a target, as in the reference script.
    let examples: Vec<Example> = (0..batch)
        .map(|_| {
            let tokens: Vec<u32> = (0..=seq).map(|_| rng.random_range(0..vocab as u32)).collect();
            Example { tokens, prefix_len: 1 }
        })
        .collect();
    let rows: Vec<&Example> = examples.iter().collect();
    let batch_tensors = Batch::<B>::new(&rows, 0, device);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(samples);
    group.throughput(Throughput::Elements((batch * seq) as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            // The step reads the loss back to the host, so a GPU step is timed to completion.
            let (next, stats) = train_step(model.take().unwrap(), &mut optim, &Ntp, &batch_tensors, 0, 1e-4, 1.0);
            model = Some(next);
            black_box(stats.loss)
        })
    });
    group.finish();
}

fn train_steps(c: &mut Criterion) {
    lab_core::alloc::keep_freed_memory();
    for device in benches::devices() {
        let on = device.name();
        on_device!(autodiff device, "benchmark", |B, dev| {
            // The lab's CPU-test preset on a G(2,4,10)-sized batch.
            bench_config::<B>(c, &format!("{on}/tiny-d64-l2-b64x15"), GptConfig::tiny(14, 15), 64, 20, &dev);
            // The size the speed target of the GPU issue names: d 128, 2 layers, batch 64 x 32.
            let mid = GptConfig::new(54, 32).with_n_layers(2).with_d_model(128).with_n_heads(4).with_d_ff(512);
            bench_config::<B>(c, &format!("{on}/d128-l2-b64x32"), mid, 64, 10, &dev);
            // The NTF README model.
            bench_config::<B>(c, &format!("{on}/ntf-d384-l6-b64x32"), GptConfig::ntf(54, 32), 64, 10, &dev);
            anyhow::Ok(())
        })
        .unwrap();
    }
}

criterion_group!(benches, train_steps);
criterion_main!(benches);

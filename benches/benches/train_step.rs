//! Training-step throughput (tokens/s): one `trainer::train::train_step` (forward, loss,
//! backward, global-norm clipping, AdamW) on random tokens, the same work as the PyTorch reference
//! `benches/gpt_step.py` (loss over every position, no dropout), on every backend of the
//! build (`benches::devices`).
//!
//! The `experiment_step` group times whole objectives (NTP, BST, NextLat) on path-star batches at
//! the planning experiments' sizes, `linear_product` the linear map's product alone (f32, and
//! bf16 where the CPU has it); run one group with `-- experiment_step`.
//!
//! `cargo bench -p benches --bench train_step [--features wgpu|cuda]`; compare with
//! `python3 benches/gpt_step.py --d-model 128 --n-layers 2 --n-heads 4 --batch 64 --seq-len 32 --vocab 54`,
//! or run `python3 benches/vs_torch.py`, which runs the `experiment_step` cases beside PyTorch and
//! prints the table.

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
use trainer::objective::{BuildContext, LabModel, Ntp, ObjectiveConfig};
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

/// A model and batch size of the planning experiments (issue 18).
#[derive(Clone, Copy)]
struct Size {
    layers: usize,
    d_model: usize,
    heads: usize,
    batch: usize,
}

impl Size {
    /// The experiment size: d 128, 4 heads, batch 128.
    fn d128(layers: usize) -> Self {
        Size { layers, d_model: 128, heads: 4, batch: 128 }
    }

    /// The size every shipped path-star config and sweep trains (the `tiny` preset, batch 64):
    /// the positive-control ladder, the MI grid and the objectives' table of 2026-12-01 ran here.
    const TINY: Size = Size { layers: 2, d_model: 64, heads: 2, batch: 64 };

    /// The benchmark's name for it, e.g. `d128-l2-b128`.
    fn name(self) -> String {
        format!("d{}-l{}-b{}", self.d_model, self.layers, self.batch)
    }
}

/// One training step of `objective` on real path-star batches, at a size the planning
/// experiments use (issue 18): `size`'s model on a batch of `task`'s sequences.
fn bench_objective<B: AutodiffBackend>(
    c: &mut Criterion,
    name: &str,
    task: &tasks::TaskSpec,
    size: Size,
    objective: &ObjectiveConfig,
    device: &B::Device,
) {
    // The model, optimizer and batch are built when criterion first runs the case, so that the
    // cases a filter leaves out (`vs_torch.py` runs one at a time) build nothing.
    let build = || {
        let task = task.build().expect("a valid task");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let examples: Vec<Example> = (0..size.batch).map(|_| task.sample(&mut rng)).collect();
        let seq = examples[0].tokens.len() - 1;
        let config = GptConfig::new(task.vocab().len(), seq)
            .with_n_layers(size.layers)
            .with_d_model(size.d_model)
            .with_n_heads(size.heads)
            .with_d_ff(4 * size.d_model);
        let cx = BuildContext::<B> { task: task.as_ref(), train: &examples, model: &config, device };
        let objective = objective.build::<B>(&cx).expect("a valid objective");
        let model = LabModel::<B> { gpt: config.init_seeded(0, device), heads: objective.init_heads(device) };
        let optim = AdamW::new(&OptimizerConfig::default()).init::<B, LabModel<B>>();
        let rows: Vec<&Example> = examples.iter().collect();
        let batch = Batch::<B>::new(&rows, task.vocab().dummy(), device);
        (Some(model), optim, objective, batch)
    };
    let mut state = None;
    let mut group = c.benchmark_group("experiment_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(size.batch as u64));
    group.bench_function(name, |b| {
        let (model, optim, objective, batch) = state.get_or_insert_with(build);
        b.iter(|| {
            let (next, stats) = train_step(model.take().unwrap(), optim, objective.as_ref(), batch, 0, 1e-4, 1.0);
            *model = Some(next);
            black_box(stats.loss)
        })
    });
    group.finish();
}

/// The experiment sizes (throughput in sequences/s): NTP and the objectives whose extra work is
/// largest (BST's second encoder, NextLat's transition rollout), at d 128 with 2 and 4 layers and
/// at the shipped configs' tiny model, on G(2,4,10) and G(2,5,50). Compare with
/// `python3 benches/gpt_step.py --d-model 128 --n-layers 2 --n-heads 4 --batch 128 --seq-len 24
/// --vocab 14 --prefix-len 21` (NTP's work), or run `benches/vs_torch.py`.
fn experiment_steps(c: &mut Criterion) {
    lab_core::alloc::keep_freed_memory();
    let star = |degree, path_len, nodes| {
        tasks::TaskSpec::PathStar(tasks::path_star::PathStarParams { degree, path_len, nodes, reverse: false })
    };
    for device in benches::devices() {
        let on = device.name();
        // On a CPU with AVX512-BF16, the same steps again with the linear maps' products in bf16
        // (`flex-bf16/...`; kernels/src/bf16.rs).
        let bf16 = on == "flex" && kernels::bf16_supported();
        for precision in if bf16 { &[false, true][..] } else { &[false][..] } {
            kernels::set_bf16_products(*precision).expect("checked above");
            let on = if *precision { format!("{on}-bf16") } else { on.to_string() };
            on_device!(autodiff device, "benchmark", |B, dev| {
                for (task_name, task) in [("g2-4-10", star(2, 4, 10)), ("g2-5-50", star(2, 5, 50))] {
                    for size in [Size::d128(2), Size::d128(4), Size::TINY] {
                        for objective in [
                            ObjectiveConfig::Ntp,
                            ObjectiveConfig::Bst(Default::default()),
                            ObjectiveConfig::NextLat(Default::default()),
                        ] {
                            let name = format!("{on}/{}-{}-{task_name}", objective.name(), size.name());
                            bench_objective::<B>(c, &name, &task, size, &objective, &dev);
                        }
                    }
                }
                anyhow::Ok(())
            })
            .unwrap();
        }
        kernels::set_bf16_products(false).expect("off always works");
    }
}

/// The linear map's forward product alone, at the shapes of the d 128 experiment step (3072 rows:
/// 128 sequences of G(2,4,10)), in f32 through gemm and, on CPUs with AVX512-BF16, with bf16
/// products (`linear_product/flex-bf16/...`): the kernels' own speed, apart from the step's other
/// work. Throughput in FLOPs.
fn linear_products(c: &mut Criterion) {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::{Distribution, Tensor};
    lab_core::alloc::keep_freed_memory();
    let mut group = c.benchmark_group("linear_product");
    let precisions: &[bool] = if kernels::bf16_supported() { &[false, true] } else { &[false] };
    for &bf16 in precisions {
        kernels::set_bf16_products(bf16).expect("checked above");
        let on = if bf16 { "flex-bf16" } else { "flex" };
        for [m, k, n] in [[3072, 128, 384], [3072, 128, 512], [3072, 512, 128]] {
            let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &FlexDevice);
            let w = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 0.1), &FlexDevice);
            group.throughput(Throughput::Elements((2 * m * k * n) as u64));
            group.bench_function(format!("{on}/{m}x{k}x{n}"), |b| {
                b.iter(|| black_box(kernels::linear(x.clone(), w.clone(), None)))
            });
        }
    }
    kernels::set_bf16_products(false).expect("off always works");
    group.finish();
}

criterion_group!(benches, train_steps, experiment_steps, linear_products);
criterion_main!(benches);

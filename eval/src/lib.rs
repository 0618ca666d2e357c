//! Evaluation of lab models: teacher-forced versus free-running accuracy per target position,
//! the task verifier's verdict on free-running outputs, the Pitfalls diagnostics for path-star
//! (decision-token accuracy, Clever-Hans rate), accuracy against distance for the long-range
//! tasks, diversity and creativity for the creative tasks, and pass@k from sampled generations
//! for every task.
//!
//! The crate never links the trainer: it reads a run directory through `lab_core::run_dir` (the
//! layout and sidecars both sides share) and the types of `tasks` and `models`. The trainer calls
//! [`evaluate`] at its eval steps; `cargo run -p eval -- RUN_DIR` does the same afterwards.

pub mod compare;
pub mod creativity;
pub mod decode;
pub mod files;
pub mod pass_at_k;
pub mod plot;
pub mod report;
pub mod robustness;
pub mod sample;

pub use creativity::{Diversity, TrainingTargets};
pub use pass_at_k::PassAtK;
pub use report::{DistancePoint, EvalReport, Failure, PathStarDiagnostics, Scores};
pub use sample::Sampling;

use burn::tensor::backend::Backend;
use lab_core::Batch;
use models::Decoder;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

use crate::sample::Purpose;

/// What to evaluate and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalOptions {
    /// Test examples to evaluate, from the start of the test split; 0, the default, scores all
    /// of them (a subset's binomial error, about 0.016 at 1,000 examples and an accuracy near
    /// 1/2, is as large as the differences the tables compare).
    #[serde(default = "EvalOptions::default_examples")]
    pub examples: usize,
    /// Rows per forward pass.
    #[serde(default = "EvalOptions::default_batch_size")]
    pub batch_size: usize,
    /// Mistakes to keep for `failures.txt`.
    #[serde(default = "EvalOptions::default_failures")]
    pub failures: usize,
    /// Also decode teacherless: the prompt followed by `$` inputs, every target token from one
    /// forward pass (how NTF evaluates teacherless models).
    #[serde(default)]
    pub teacherless: bool,
    /// Generations for diversity and creativity (creative tasks only).
    #[serde(default)]
    pub diversity: DiversityOptions,
    /// Sampled generations for pass@k (every task).
    #[serde(default)]
    pub pass_at_k: PassAtKOptions,
    /// Seed of every sampled generation: the same seed reproduces every sample.
    #[serde(default)]
    pub seed: u64,
}

/// `[eval.diversity]`: how the creative tasks' generations are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiversityOptions {
    /// Generations per test prompt (M).
    #[serde(default = "one")]
    pub samples: usize,
    /// How tokens are drawn. The published protocol is greedy: with hash conditioning the
    /// diversity comes from the hash, not from sampling.
    #[serde(default = "Sampling::greedy")]
    pub sampling: Sampling,
}

impl Default for DiversityOptions {
    fn default() -> Self {
        DiversityOptions { samples: 1, sampling: Sampling::greedy() }
    }
}

fn one() -> usize {
    1
}

/// `[eval.pass_at_k]`: sampled generations per prompt for pass@k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassAtKOptions {
    /// Test prompts to sample from, from the start of the test split (0: no pass@k).
    #[serde(default = "PassAtKOptions::default_prompts")]
    pub prompts: usize,
    /// Generations per prompt (n); pass@k is reported for k = 1 … min(n, 64).
    #[serde(default = "PassAtKOptions::default_samples")]
    pub samples: usize,
    /// How tokens are drawn (plain sampling at temperature 1 by default: the model's own
    /// distribution).
    #[serde(default = "PassAtKOptions::default_sampling")]
    pub sampling: Sampling,
}

impl Default for PassAtKOptions {
    fn default() -> Self {
        PassAtKOptions {
            prompts: Self::default_prompts(),
            samples: Self::default_samples(),
            sampling: Self::default_sampling(),
        }
    }
}

impl PassAtKOptions {
    fn default_prompts() -> usize {
        100
    }
    fn default_samples() -> usize {
        pass_at_k::MAX_K
    }
    fn default_sampling() -> Sampling {
        Sampling::with_temperature(1.0)
    }
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            examples: Self::default_examples(),
            batch_size: Self::default_batch_size(),
            failures: Self::default_failures(),
            teacherless: false,
            diversity: DiversityOptions::default(),
            pass_at_k: PassAtKOptions::default(),
            seed: 0,
        }
    }
}

impl EvalOptions {
    fn default_examples() -> usize {
        0
    }
    fn default_batch_size() -> usize {
        256
    }
    fn default_failures() -> usize {
        20
    }

    /// Checks the sampling options; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.diversity.sampling.validate().map_err(|e| format!("eval.diversity.sampling: {e}"))?;
        self.pass_at_k.sampling.validate().map_err(|e| format!("eval.pass_at_k.sampling: {e}"))?;
        if self.batch_size == 0 {
            return Err("eval.batch_size must be at least 1".into());
        }
        if self.diversity.samples == 0 {
            return Err("eval.diversity.samples must be at least 1".into());
        }
        if self.pass_at_k.prompts > 0 && self.pass_at_k.samples == 0 {
            return Err("eval.pass_at_k.samples must be at least 1".into());
        }
        if self.pass_at_k.samples > 1 << 20 || self.diversity.samples > 1 << 20 {
            return Err("at most 2^20 samples per prompt".into());
        }
        Ok(())
    }

    /// How many of `total` test examples an evaluation scores: the first `examples` (0: all).
    pub fn scored(&self, total: usize) -> usize {
        if self.examples == 0 { total } else { self.examples.min(total) }
    }

    /// The same options without pass@k: what periodic evaluations during training run, since
    /// sampling n generations per prompt costs n times a greedy evaluation.
    pub fn without_pass_at_k(&self) -> EvalOptions {
        EvalOptions { pass_at_k: PassAtKOptions { prompts: 0, ..self.pass_at_k.clone() }, ..self.clone() }
    }
}

/// Positions a model needs to evaluate `examples`: the longest teacher-forced input and the
/// longest prompt followed by a full free-running target.
pub fn needed_positions(task: &dyn Task, examples: &[Example]) -> usize {
    examples.iter().map(|e| (e.tokens.len() - 1).max(e.prefix_len + task.max_target_len() - 1)).max().unwrap_or(1)
}

/// Evaluates `model` on (the first `options.examples` of) `examples`; `train` tells memorized
/// outputs of the creative tasks from novel ones.
pub fn evaluate<B: Backend>(
    model: &Decoder<B>,
    task: &dyn Task,
    examples: &[Example],
    train: &TrainingTargets,
    options: &EvalOptions,
) -> EvalReport {
    let n = options.scored(examples.len());
    let examples = &examples[..n];
    assert!(
        model.position_limit().is_none_or(|limit| needed_positions(task, examples) <= limit),
        "the examples need more positions than the model has; check with needed_positions first"
    );
    let device = model.device();
    let batch_size = options.batch_size;

    let mut forced = Vec::with_capacity(n);
    let mut dollar = Vec::new();
    for chunk in examples.chunks(batch_size) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::<B>::new(&refs, task.vocab().dummy(), &device);
        forced.extend(decode::teacher_forced(model, &batch));
        if options.teacherless {
            dollar.extend(decode::teacherless(model, &batch, task.vocab().dummy()));
        }
    }
    let prompts: Vec<&[u32]> = examples.iter().map(|e| e.prefix()).collect();
    let free = generate_all(model, task, &prompts, 1, &Sampling::greedy(), |_, _| None, batch_size, &device)
        .into_iter()
        .map(|mut g| g.pop().expect("one generation per prompt"))
        .collect::<Vec<_>>();
    let mut report = report::score(
        task,
        examples,
        &forced,
        &free,
        options.teacherless.then_some(dollar.as_slice()),
        options.failures,
    );
    report.decoder = model.kind();

    if task.is_creative() {
        let d = &options.diversity;
        // The greedy free-running outputs are the published protocol's generations; decode
        // again only when asked for samples.
        let generations = if d.samples == 1 && d.sampling.is_greedy() {
            free.iter().map(|g| vec![g.clone()]).collect()
        } else {
            let seed = options.seed;
            let rng = |p, s| Some(sample::stream(seed, Purpose::Diversity, p, s));
            generate_all(model, task, &prompts, d.samples, &d.sampling, rng, batch_size, &device)
        };
        report.diversity = Some(creativity::diversity(task, &prompts, &generations, train, d.sampling.to_string()));
        // A teacherless model is meant to be decoded in one pass over `$` inputs; its outputs
        // there are scored too, so that it is judged on the decoding it was trained for.
        if options.teacherless {
            let one_pass: Vec<Vec<Vec<u32>>> = dollar.iter().map(|g| vec![g.clone()]).collect();
            report.teacherless_diversity =
                Some(creativity::diversity(task, &prompts, &one_pass, train, "teacherless (one pass)".into()));
        }
    }

    let p = &options.pass_at_k;
    if p.prompts > 0 && p.samples > 0 {
        let prompts = &prompts[..p.prompts.min(prompts.len())];
        let seed = options.seed;
        let rng = |i, s| Some(sample::stream(seed, Purpose::PassAtK, i, s));
        let generations = generate_all(model, task, prompts, p.samples, &p.sampling, rng, batch_size, &device);
        let right: Vec<usize> = prompts
            .iter()
            .zip(&generations)
            .map(|(prompt, samples)| samples.iter().filter(|g| task.verify(prompt, g).is_valid()).count())
            .collect();
        report.pass_at_k = Some(PassAtK::new(&right, p.samples, p.sampling.to_string()));
    }
    report
}

/// Free-running generations, `samples` per prompt (`result[i][s]`), drawn with `sampling`;
/// `rng(i, s)` gives the generator of prompt `i`'s sample `s` (unused when greedy).
///
/// Rows are batched by prompt length, so that a row's first generated token sits at the same
/// position in every row of its batch.
fn generate_all<B: Backend>(
    model: &Decoder<B>,
    task: &dyn Task,
    prompts: &[&[u32]],
    samples: usize,
    sampling: &Sampling,
    rng: impl Fn(usize, usize) -> Option<ChaCha8Rng>,
    batch_size: usize,
    device: &B::Device,
) -> Vec<Vec<Vec<u32>>> {
    let mut rows: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|i| (0..samples).map(move |s| (i, s))).collect();
    rows.sort_by_key(|&(i, _)| prompts[i].len());
    let mut out = vec![vec![Vec::new(); samples]; prompts.len()];
    for group in rows.chunk_by(|a, b| prompts[a.0].len() == prompts[b.0].len()) {
        for chunk in group.chunks(batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&(i, _)| prompts[i]).collect();
            let mut rngs: Vec<ChaCha8Rng> = if sampling.is_greedy() {
                Vec::new()
            } else {
                chunk.iter().map(|&(i, s)| rng(i, s).expect("sampling needs a generator")).collect()
            };
            let generated =
                decode::generate(model, &batch, task.max_target_len(), task.eos(), sampling, &mut rngs, device);
            for (&(i, s), g) in chunk.iter().zip(generated) {
                out[i][s] = g;
            }
        }
    }
    out
}

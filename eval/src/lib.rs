//! Evaluation of lab models: teacher-forced versus free-running accuracy per target position,
//! the task verifier's verdict on free-running outputs, and the Pitfalls diagnostics for
//! path-star (decision-token accuracy, Clever-Hans rate).
//!
//! The crate never links the trainer: it reads a run directory through the types of `tasks`
//! (task and data specs) and `models` (model config, checkpoints). The trainer calls
//! [`evaluate`] at its eval steps; `cargo run -p eval -- RUN_DIR` does the same afterwards.

pub mod batch;
pub mod decode;
pub mod report;
pub mod run_dir;

pub use batch::Batch;
pub use report::{EvalReport, Failure, PathStarDiagnostics, Scores};

use burn::tensor::backend::Backend;
use models::Gpt;
use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

/// What to evaluate and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalOptions {
    /// Test examples to evaluate, from the start of the test split (0: all of them).
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
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            examples: Self::default_examples(),
            batch_size: Self::default_batch_size(),
            failures: Self::default_failures(),
            teacherless: false,
        }
    }
}

impl EvalOptions {
    fn default_examples() -> usize {
        2000
    }
    fn default_batch_size() -> usize {
        256
    }
    fn default_failures() -> usize {
        20
    }
}

/// Positions a model needs to evaluate `examples`: the longest teacher-forced input and the
/// longest prompt followed by a full free-running target.
pub fn needed_positions(task: &dyn Task, examples: &[Example]) -> usize {
    examples.iter().map(|e| (e.tokens.len() - 1).max(e.prefix_len + task.max_target_len() - 1)).max().unwrap_or(1)
}

/// Evaluates `model` on (the first `options.examples` of) `examples`.
pub fn evaluate<B: Backend>(
    model: &Gpt<B>,
    task: &dyn Task,
    examples: &[Example],
    options: &EvalOptions,
) -> EvalReport {
    let n = if options.examples == 0 { examples.len() } else { options.examples.min(examples.len()) };
    let examples = &examples[..n];
    assert!(
        needed_positions(task, examples) <= model.max_seq_len(),
        "the examples need more positions than the model has; check with needed_positions first"
    );
    let device = model_device(model);
    let batch_size = options.batch_size.max(1);

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
    // Free-running decoding batches prompts of equal length, so that a row's first generated
    // token sits at the same position in every row.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| examples[i].prefix_len);
    let mut free = vec![Vec::new(); n];
    for group in order.chunk_by(|&a, &b| examples[a].prefix_len == examples[b].prefix_len) {
        for chunk in group.chunks(batch_size) {
            let prompts: Vec<&[u32]> = chunk.iter().map(|&i| examples[i].prefix()).collect();
            let generated = decode::greedy(model, &prompts, task.max_target_len(), task.eos(), &device);
            for (&i, out) in chunk.iter().zip(generated) {
                free[i] = out;
            }
        }
    }
    report::score(task, examples, &forced, &free, options.teacherless.then_some(dollar.as_slice()), options.failures)
}

fn model_device<B: Backend>(model: &Gpt<B>) -> B::Device {
    use burn::module::Module;
    model.devices().into_iter().next().expect("a model lives on a device")
}

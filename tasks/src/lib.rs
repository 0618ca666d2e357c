//! Synthetic tasks that expose the short-sightedness of next-token prediction.
//!
//! Every task turns a seed into [`Example`]s (token ids, prefix length, text form) over its own
//! [`Vocab`], and carries a verifier that scores free-running outputs. A [`TaskSpec`] (task name
//! and parameters, serialisable) builds a [`Task`]; the same spec and seed always give the same
//! examples, byte for byte.
//!
//! | family | tasks | what it probes |
//! |---|---|---|
//! | planning | [`path_star`] | the Clever-Hans cheat of teacher forcing (Bachmann & Nagarajan 2024) |
//! | long range | [`long_range`]: key recall, prefix function, graph walk | memory across a distractor span; a global constraint on the output |
//! | creativity | [`creative`]: sibling, triangle, circle, line | novel yet coherent outputs (Nagarajan et al. 2025) |
//!
//! This crate knows nothing of burn or of models: it is plain data, usable by anyone.

pub mod creative;
pub mod dataset;
pub mod example;
pub mod long_range;
pub mod message;
pub mod path_star;
pub mod spec;
pub mod vocab;

pub use example::{Example, TextExample};
pub use message::one_line;
pub use spec::{SpecError, TaskSpec};
pub use vocab::Vocab;

use rand_chacha::ChaCha8Rng;

/// A free-running output's verdict from a task's verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The output solves the prompt (for creative tasks: it is coherent).
    Valid,
    /// It does not; the reason is meant for a human reading `failures.txt`.
    Invalid(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Valid => f.write_str("valid"),
            Verdict::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl Verdict {
    /// True for [`Verdict::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid)
    }
}

/// A task: a generator of examples over a vocabulary, with a verifier.
///
/// Implementations are cheap to share across threads; all randomness comes in through the
/// `rng` argument, so a task holds no hidden state between calls.
pub trait Task: Send + Sync {
    /// The specification the task was built from.
    fn spec(&self) -> &TaskSpec;

    /// The task's vocabulary (it always contains the teacherless dummy token).
    fn vocab(&self) -> &Vocab;

    /// Draws one training example.
    fn sample(&self, rng: &mut ChaCha8Rng) -> Example;

    /// Draws one test example. Test prompts can come from another distribution than training
    /// examples: triangle discovery trains on edge samples too but is tested on triangles only.
    fn sample_test(&self, rng: &mut ChaCha8Rng) -> Example {
        self.sample(rng)
    }

    /// The token that ends a target, for tasks whose targets vary in length; free-running
    /// decoding stops there. `None` when every target has the same length.
    fn eos(&self) -> Option<u32> {
        None
    }

    /// The longest target the task produces; a decoding budget for free-running evaluation.
    fn max_target_len(&self) -> usize;

    /// Whether `output` (generated after `prefix`) solves the prompt. For tasks with a unique
    /// answer this is equality with the reference; for the walk and creative tasks it is the
    /// task's rule, since many outputs may be right.
    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict;

    /// Checks that a prompt is one the task could have produced (used when reading data that
    /// the lab did not write). The error says what is wrong.
    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String>;

    /// The identity of an instance: two examples with equal keys pose the same problem (for
    /// path-star, the same graph and endpoints whatever the order of the edge list). Train and
    /// test splits share no key.
    fn instance_key(&self, example: &Example) -> Vec<u32>;

    /// A human-readable account of an example for `tasks show` (what the prompt means and
    /// what the target must satisfy).
    fn describe(&self, example: &Example) -> String;

    /// For creative tasks: the canonical form of a target (invariant to edge order, edge
    /// direction where it carries no meaning, and rotation), used to tell novel outputs from
    /// memorized ones. `None` for tasks without such a notion.
    fn canonical(&self, _target: &[u32]) -> Option<Vec<u32>> {
        None
    }

    /// For long-range tasks: the distance in positions from the last token that decides the
    /// answer to the answer (the answer's index minus that token's), for accuracy-versus-distance
    /// curves. `None` for tasks without such a notion.
    fn distance(&self, _example: &Example) -> Option<usize> {
        None
    }

    /// The task as a path-star task, for what only path-star has: NTF's line format and the
    /// diagnostics of its decision token (teacher-forced accuracy at target position 2, the
    /// Clever-Hans rate). `None` for every other task.
    fn as_path_star(&self) -> Option<&path_star::PathStar> {
        None
    }

    /// Counterfactual futures of an example: targets of the same length that the same prompt
    /// could have been followed by had the answer gone another way (path-star: the paths from
    /// the source down each other arm), for contrastive negatives that share the prompt, so that
    /// telling the true future from them needs the plan, not the prompt. `None` for tasks
    /// without such a notion; `Some(empty)` never happens for a task that has one.
    fn counterfactual_targets(&self, _example: &Example) -> Option<Vec<Vec<u32>>> {
        None
    }

    /// Whether the task is one of the creative tasks, whose outputs are scored for diversity and
    /// creativity (novel, coherent outputs) rather than for reproducing a reference.
    fn is_creative(&self) -> bool {
        false
    }

    /// Checks a whole example: its prompt, then its target with the verifier.
    fn check(&self, example: &Example) -> Result<(), String> {
        self.check_prompt(example.prefix()).map_err(|e| format!("prompt: {e}"))?;
        match self.verify(example.prefix(), example.target()) {
            Verdict::Valid => Ok(()),
            Verdict::Invalid(why) => Err(format!("target: {why}")),
        }
    }
}

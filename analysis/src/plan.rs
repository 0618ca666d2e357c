//! `analysis plan RUN`: an MI analysis that measures planning (docs/method.md, §13.4, with the
//! negatives issue 19 asks for). For every position t of a path-star sequence, the InfoNCE bound
//! on I(h_t; y | graph): how well the frozen state h_t picks its own answer y out of the d
//! answers the same graph has (one per arm: the task's counterfactual futures). The negatives
//! share the prompt, so a state that only knows the prompt scores 0 and a state that knows the
//! way to the goal scores up to log d. Since the d answers differ only in their arm, this is also
//! I(h_t; arm | graph). By default each answer is reduced to the arm's first node, the decision
//! token, so that the bilinear critic credits only a state that represents what the decoder must
//! emit; `--inner-nodes` matches every node between source and goal instead, which the goal's
//! parent (one edge back from the goal) already gives away.
//!
//! Read per position it is the Thinking-Tokens-style curve over the whole sequence: nothing can
//! be known before the goal token (prompt position p − 2); a planner's states should carry the
//! arm from the goal token or the `=` on, and at the decision (the state that predicts target
//! position 2, input position p) at the latest. NTP's Clever-Hans solution should not: it learns
//! the arm only once it has read the arm's first node (target position 3 on).
//!
//! Protocol (the same for every run): the run's GPT is frozen; a fresh critic (a GELU layer on the
//! GPT's token embedding, mean over the answer's tokens, a projection, and a bilinear score of
//! h_t) is trained on the training split, then the bound log d − L is measured on the test split.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::module::{AutodiffModule, Module};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use lab_core::run_dir;
use models::{Gpt, linear_rows};
use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

use trainer::RunConfig;
use trainer::objective::infonce::{Scorer, ScorerKind};

use crate::critic::{self, CriticTraining};

fn bilinear() -> ScorerKind {
    ScorerKind::Bilinear
}

/// Which part of each answer the critic matches h_t against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanAnswer {
    /// The arm's first node, the decision token: a bilinear critic finds it only in a state that
    /// represents the node the decoder must emit.
    #[default]
    Decision,
    /// Every node between source and goal. The same information given the graph (any of them
    /// names the arm), but the goal's parent, one edge back from the goal the prompt names, is
    /// enough to match: a weaker test of planning.
    Inner,
}

/// How the critic is trained and the bound measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanMiOptions {
    /// What of each answer is matched. Files written before this option existed matched the
    /// inner nodes.
    #[serde(default = "inner")]
    pub answer: PlanAnswer,
    /// The critic's score of (h_t, answer summary): `mlp` (a nonlinear readout, as BST's text
    /// head reads its state; measured: a bilinear critic found 0.002 nats in a BST state whose
    /// decoder is right 99% of the time, the MLP 0.595) or `bilinear` (a linear readout, as the
    /// GPT's own head reads it).
    #[serde(default = "bilinear")]
    pub critic: ScorerKind,
    /// Width of the critic's answer summary.
    pub summary_dim: usize,
    /// Critic training steps.
    pub steps: usize,
    /// Examples per critic step (each with its d answers).
    pub batch: usize,
    /// The critic's AdamW learning rate.
    pub lr: f64,
    /// Test examples measured.
    pub examples: usize,
    /// Seed of the critic's initialisation and its batches.
    pub seed: u64,
    /// Train and measure the decision's critic alone (the state that predicts target position
    /// 2), not one per position: the number a table needs, at a few percent of the cost.
    #[serde(default)]
    pub decision_only: bool,
}

fn inner() -> PlanAnswer {
    PlanAnswer::Inner
}

impl Default for PlanMiOptions {
    fn default() -> Self {
        PlanMiOptions {
            answer: PlanAnswer::Decision,
            critic: ScorerKind::Mlp,
            summary_dim: 64,
            steps: 2000,
            batch: 64,
            lr: 3e-3,
            examples: 1024,
            seed: 0,
            decision_only: false,
        }
    }
}

/// The bound at one position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPoint {
    /// Input position t (0-based) of h_t.
    pub index: usize,
    /// What h_t has just read and predicts: `prompt 25 (=)` or `target 2` (the target position
    /// h_t predicts, 1-based; target 2 is the decision).
    pub label: String,
    /// log d − L_InfoNCE on the test examples, nats.
    pub bound: f64,
}

/// `mi_plan.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanMi {
    /// The checkpoint analysed.
    pub step: u64,
    /// log d, the ceiling.
    pub log_d: f64,
    /// The options used.
    pub options: PlanMiOptions,
    /// The critic's training loss over its last 20 steps.
    pub critic_final_loss: f64,
    /// The bound at every input position.
    pub per_position: Vec<PlanPoint>,
    /// The bound at the decision (the state that predicts target position 2).
    pub decision: f64,
}

#[derive(Module, Debug)]
struct Critic<B: Backend> {
    tokens: Linear<B>,
    proj: Linear<B>,
    scorer: Scorer<B>,
}

impl<B: Backend> Critic<B> {
    fn new(kind: ScorerKind, d: usize, s: usize, device: &B::Device) -> Self {
        let std = (1.0 / d as f64).sqrt();
        let lin = |i, o| LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device);
        Critic { tokens: lin(d, d), proj: lin(d, s), scorer: Scorer::new(kind, d, s, std, device) }
    }

    /// Each row's log-probability of its own answer among its d answers, `[b]`, for states
    /// `[b, d]` and answer embeddings `[b (m + 1), l, d]` (each row's own answer first, then its
    /// m counterfactuals).
    fn log_p(&self, hidden: Tensor<B, 2>, answers: Tensor<B, 3>, per_row: usize) -> Tensor<B, 1> {
        let b = hidden.dims()[0];
        let summaries = linear_rows(&self.proj, gelu(linear_rows(&self.tokens, answers)).mean_dim(1)); // [b c, 1, s]
        let s = summaries.dims()[2];
        let scores = self.scorer.scores_grouped(hidden, summaries.reshape([b, per_row, s])); // [b, c]
        // Each row's own answer is its first candidate.
        log_softmax(scores, 1).slice([0..b, 0..1]).reshape([b])
    }
}

/// One critic per position: a critic shared by all positions learns, from the many positions
/// where nothing can be known (the prompt before the goal), to make every answer look alike,
/// which drowns the few positions where something can (measured: a shared critic found nothing
/// even where the state has read the arm).
#[derive(Module, Debug)]
struct Critics<B: Backend> {
    positions: Vec<Critic<B>>,
}

impl<B: Backend> Critics<B> {
    fn new(kind: ScorerKind, positions: usize, d: usize, s: usize, device: &B::Device) -> Self {
        Critics { positions: (0..positions).map(|_| Critic::new(kind, d, s, device)).collect() }
    }

    /// Each (row, measured position)'s log-probability of its own answer, `[b, positions]`; the
    /// critics read the states at input positions `at`.
    fn log_p(&self, hidden: Tensor<B, 3>, answers: Tensor<B, 3>, per_row: usize, at: &[usize]) -> Tensor<B, 2> {
        let [b, _, d] = hidden.dims();
        assert_eq!(at.len(), self.positions.len(), "one critic per measured position");
        let columns = self
            .positions
            .iter()
            .zip(at)
            .map(|(c, &j)| {
                c.log_p(hidden.clone().slice([0..b, j..j + 1, 0..d]).reshape([b, d]), answers.clone(), per_row)
            })
            .map(|x| x.reshape([b, 1]))
            .collect();
        Tensor::cat(columns, 1)
    }
}

/// Examples with their counterfactual answers: hidden states, answer embeddings, answers per
/// example.
fn prepare<B: Backend>(
    gpt: &Gpt<B>,
    task: &dyn Task,
    rows: &[&Example],
    answer: PlanAnswer,
    device: &B::Device,
) -> Result<(Tensor<B, 3>, Tensor<B, 3>, usize)> {
    let pad = task.vocab().dummy();
    let batch = Batch::<B>::new(rows, pad, device);
    if batch.lens().iter().any(|&l| l != batch.lens()[0]) {
        bail!("the planning MI analysis needs sequences of one length (path-star)");
    }
    let hidden = gpt.forward(batch.inputs.clone()).hidden;
    let (mut flat, mut per_row, mut len) = (Vec::new(), 0, 0);
    for ex in rows {
        let alt = task.counterfactual_targets(ex).with_context(|| {
            format!("task {} has no counterfactual futures (only path-star does)", task.spec().name())
        })?;
        per_row = alt.len() + 1;
        // The answers without their first token (the source, shared by all) and their last (the
        // goal, or another arm's leaf): a state that has read the goal in the prompt would tell
        // its answer by the goal alone. What is left, the arm's inner nodes (or only the first of
        // them, the decision token; see `PlanAnswer`), is what a plan knows.
        let end = |y: &[u32]| match answer {
            PlanAnswer::Decision => 2,
            PlanAnswer::Inner => y.len() - 1,
        };
        let inner = |y: &[u32]| -> Vec<i32> { y[1..end(y)].iter().map(|&x| x as i32).collect() };
        if ex.target().len() < 3 {
            bail!("the planning MI analysis needs paths of at least 3 nodes (an inner node to know)");
        }
        len = end(ex.target()) - 1;
        flat.extend(inner(ex.target()));
        for a in alt {
            if a.len() != ex.target().len() {
                bail!("counterfactual answers of another length than the answer");
            }
            flat.extend(inner(&a));
        }
    }
    let answers = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [rows.len() * per_row, len]), device);
    Ok((hidden, gpt.embed_tokens(answers), per_row))
}

/// Analyses the latest checkpoint of `run`.
pub fn analyse<B: AutodiffBackend>(run: &Path, options: &PlanMiOptions, device: &B::Device) -> Result<PlanMi> {
    if options.steps == 0 || options.batch == 0 || options.summary_dim == 0 {
        bail!("the planning MI analysis needs steps, batch and summary_dim >= 1");
    }
    let config = RunConfig::load(&run_dir::RunDir(run).config(), &[])
        .with_context(|| format!("{} is not a run directory", run.display()))?;
    let checkpoint = run_dir::latest(run)?;
    if checkpoint.meta.reads == run_dir::Direction::Reverse {
        bail!("{} is a right-to-left LM: its states summarise the past, not the future", run.display());
    }
    let loaded = config.data.load(&config.task, true)?;
    let task = loaded.task;
    let Some(star) = task.as_path_star() else {
        bail!("the planning MI analysis is defined for path-star runs (counterfactual answers: the other arms)");
    };
    if star.params().reverse {
        bail!("{} answers right to left; the analysis reads forward answers", run.display());
    }
    let d_arms = star.params().degree as f64;
    let n = options.examples.min(loaded.test.len());
    if n == 0 || loaded.train.is_empty() {
        bail!("the planning MI analysis needs training and test examples (a split is empty)");
    }
    let gpt = run_dir::load_gpt::<B>(&checkpoint, device)?.valid();
    let d = checkpoint.meta.model.d_model;
    let t = loaded.train.first().map_or(0, |e| e.tokens.len() - 1);
    // Input index p (the prompt's length) holds the state that predicts target position 2.
    let p = loaded.test.first().map_or(0, |e| e.prefix_len);
    let at: Vec<usize> = if options.decision_only { vec![p] } else { (0..t).collect() };

    let how = CriticTraining { seed: options.seed, steps: options.steps, batch: options.batch, lr: options.lr };
    let (kind, s) = (options.critic, options.summary_dim);
    let draw =
        || (Critics::<Flex>::new(kind, at.len(), d, s, &FlexDevice), Critics::<B>::new(kind, at.len(), d, s, device));
    let trained = critic::train(
        how,
        loaded.train.len(),
        draw,
        |critic: &Critics<B>, batch| {
            let rows: Vec<&Example> = batch.iter().map(|&i| &loaded.train[i]).collect();
            let (hidden, answers, per_row) = prepare(&gpt, task.as_ref(), &rows, options.answer, device)?;
            let log_p = critic.log_p(Tensor::from_inner(hidden), Tensor::from_inner(answers), per_row, &at);
            Ok(log_p.mean().neg())
        },
        device,
    )?;
    let critic_final_loss = trained.final_loss;

    let critic = trained.critic.valid();
    let mut sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for chunk in loaded.test[..n].chunks(options.batch) {
        let rows: Vec<&Example> = chunk.iter().collect();
        let (hidden, answers, per_row) = prepare(&gpt, task.as_ref(), &rows, options.answer, device)?;
        let log_p =
            critic.log_p(hidden, answers, per_row, &at).into_data().convert::<f32>().to_vec::<f32>().expect("floats");
        for (k, &lp) in log_p.iter().enumerate() {
            let e = sums.entry(at[k % at.len()]).or_insert((0.0, 0));
            e.0 += d_arms.ln() + lp as f64;
            e.1 += 1;
        }
    }
    let per_position: Vec<PlanPoint> = sums
        .into_iter()
        .map(|(index, (sum, count))| {
            // The prompt ends `/ source goal =`; h at input index i has read token i and predicts
            // token i + 1: the `=` (index p − 1) predicts target 1, index p + j − 1 target j + 1.
            let label = match index.cmp(&(p - 1)) {
                std::cmp::Ordering::Less => {
                    let role = match p - 1 - index {
                        2 => " (source)",
                        1 => " (goal)",
                        _ => "",
                    };
                    format!("prompt {}{role}", index + 1)
                }
                std::cmp::Ordering::Equal => format!("prompt {} (=) -> target 1", index + 1),
                std::cmp::Ordering::Greater => format!("target {} -> target {}", index + 1 - p, index + 2 - p),
            };
            PlanPoint { index, label, bound: sum / count as f64 }
        })
        .collect();
    let decision = per_position.iter().find(|q| q.index == p).map_or(f64::NAN, |q| q.bound);
    // The analysis is meaningless for a checkpoint whose critic did not learn anything anywhere;
    // that is still a result (a flat zero curve), so it is reported, not refused.
    Ok(PlanMi {
        step: checkpoint.step,
        log_d: d_arms.ln(),
        options: options.clone(),
        critic_final_loss,
        per_position,
        decision,
    })
}

impl PlanMi {
    /// A table for people: the positions around the goal and the answer.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "InfoNCE bound on I(h_t; y | graph) with the other arms' answers as negatives, y = {} (ceiling log d = \
             {:.3} nats), critic trained {} steps (final loss {:.3})\n\n{:<22}{:>10}\n",
            match self.options.answer {
                PlanAnswer::Decision => "the decision token",
                PlanAnswer::Inner => "the nodes between source and goal",
            },
            self.log_d,
            self.options.steps,
            self.critic_final_loss,
            "h_t",
            "bound"
        );
        let from = self.per_position.len().saturating_sub(8);
        for q in &self.per_position[from..] {
            let _ = writeln!(out, "{:<22}{:>10.3}", q.label, q.bound);
        }
        let _ = writeln!(
            out,
            "\nat the decision (the state that predicts target position 2): {:.3} of {:.3} nats",
            self.decision, self.log_d
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    type B = Autodiff<Flex>;

    /// A critic that can read the arm from h_t finds up to log d; one whose h_t says nothing of
    /// the arm stays at 0.
    #[test]
    fn the_bound_finds_the_arm_where_the_state_holds_it_and_nothing_where_it_does_not() {
        let device = FlexDevice;
        let (b, t, d, l) = (32usize, 3usize, 8usize, 2usize);
        let critic: Critics<B> = models::seeded::<B, _>(1, &device, || {
            let c = Critics::new(ScorerKind::Bilinear, t, d, 8, &device);
            let _ = c.num_params();
            c
        });
        // Two answers per row: [1, 2] or [3, 4] (token embeddings e_i = one-hot i). Position 0 of
        // h says which is the row's own (the "plan"); position 1 is noise; position 2 constant.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let draw = |rng: &mut ChaCha8Rng| {
            use rand::Rng;
            let own: Vec<bool> = (0..b).map(|_| rng.random_bool(0.5)).collect();
            let mut h = vec![0f32; b * t * d];
            let mut answers = vec![0f32; b * 2 * l * d];
            for r in 0..b {
                h[(r * t) * d] = if own[r] { 1.0 } else { -1.0 };
                h[(r * t + 1) * d + 1] = rng.random_range(-1.0..1.0);
                h[(r * t + 2) * d + 2] = 1.0;
                let (mine, other) = if own[r] { ([1, 2], [3, 4]) } else { ([3, 4], [1, 2]) };
                for (c, ans) in [mine, other].iter().enumerate() {
                    for (j, &tok) in ans.iter().enumerate() {
                        answers[((r * 2 + c) * l + j) * d + tok] = 1.0;
                    }
                }
            }
            (
                Tensor::<B, 3>::from_data(TensorData::new(h, [b, t, d]), &device),
                Tensor::<B, 3>::from_data(TensorData::new(answers, [b * 2, l, d]), &device),
            )
        };
        let train = |mut critic: Critics<B>, at: &[usize], rng: &mut ChaCha8Rng| {
            let mut optim = AdamWConfig::new().init::<B, Critics<B>>();
            for _ in 0..200 {
                let (h, a) = draw(rng);
                let loss = critic.log_p(h, a, 2, at).mean().neg();
                let grads = GradientsParams::from_grads(loss.backward(), &critic);
                critic = optim.step(1e-2, critic, grads);
            }
            let (h, a) = draw(rng);
            let lp = critic.log_p(h, a, 2, at).into_data().to_vec::<f32>().unwrap();
            let w = at.len();
            move |j: usize| (0..b).map(|r| 2f64.ln() + lp[r * w + j] as f64).sum::<f64>() / b as f64
        };
        let bound = train(critic, &[0, 1, 2], &mut rng);
        assert!(bound(0) > 0.9 * 2f64.ln(), "the plan is found: {}", bound(0));
        assert!(bound(1).abs() < 0.15 && bound(2).abs() < 0.15, "no plan, no bound: {} {}", bound(1), bound(2));
        // One critic reading position 0 alone (`decision_only`) finds the same.
        let single: Critics<B> = models::seeded::<B, _>(1, &device, || {
            let c = Critics::new(ScorerKind::Bilinear, 1, d, 8, &device);
            let _ = c.num_params();
            c
        });
        let bound = train(single, &[0], &mut rng);
        assert!(bound(0) > 0.9 * 2f64.ln(), "the plan is found by a single critic: {}", bound(0));
    }
}

//! MI analysis of a trained run (docs/method.md, §13.4): per target position, how much information
//! the state h_t carries about the summary of its future, F_t = mean(h_{t+1..t+L}), estimated with
//! the InfoNCE lower bound I(h_t; F_t) >= log K − L_InfoNCE, and which tokens carry its peaks.
//!
//! The run's GPT is frozen. A fresh critic (the future encoder's mean pooler and projection, and
//! a bilinear score) is trained on the run's *training* split with in-batch negatives at the
//! same target position (K rows per batch), then the bound is measured on the test split. The
//! same protocol for every run, whatever its objective, so an NTP run and an MI-shaped run are
//! compared on equal terms (the MI run's own critic is not used). The bound can never exceed
//! log K; the pointwise value log K + log softmax(score)\[positive\] says, for one row and one
//! position, how sharply h_t picks out its own future among K.
//!
//! What the bound measures depends on the negatives: in-batch summaries of other sequences
//! differ in their prefix as well as in their future, so a state that only identifies its
//! prefix already scores high. docs/log/2026-11.md (2026-11-27) discusses what this does to the reading.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use lab_core::Batch;
use lab_core::run_dir;
use serde::{Deserialize, Serialize};
use tasks::Example;

use trainer::RunConfig;
use trainer::objective::future::{FutureEncoder, PoolerKind, future_window};
use trainer::objective::infonce::{Negatives, Scorer, ScorerKind, info_nce};

use crate::critic::{self, CriticTraining};

/// How the critic is trained and the bound measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiAnalysisOptions {
    /// Rows per batch: K, the number of candidates per query (1 positive, K − 1 negatives).
    pub k: usize,
    /// L: the summary pools h_{t+1..t+L}.
    pub horizon: usize,
    /// Width of the critic's summary and query projections.
    pub summary_dim: usize,
    /// Critic training steps on the training split.
    pub steps: usize,
    /// The critic's AdamW learning rate.
    pub lr: f64,
    /// Test rows measured (whole batches of K; the remainder is left out).
    pub examples: usize,
    /// Seed of the critic's initialisation and of its batches.
    pub seed: u64,
}

impl Default for MiAnalysisOptions {
    fn default() -> Self {
        MiAnalysisOptions { k: 64, horizon: 4, summary_dim: 64, steps: 1000, lr: 3e-3, examples: 1024, seed: 0 }
    }
}

/// The bound at one target position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionBound {
    /// Target position whose token h_t predicts (1 = the first target token).
    pub position: usize,
    /// log K − L_InfoNCE on the test rows, nats.
    pub bound: f64,
    /// The ceiling at this position: the mean log of the candidates per query (below log K
    /// where fewer than K rows of a batch reach this position, for targets of varying length).
    pub log_k: f64,
    /// Test rows measured.
    pub rows: usize,
}

/// A token's share of the peaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenPeak {
    /// The token h_t sits on (the input at position t).
    pub token: String,
    /// Test rows whose highest pointwise bound falls on this token.
    pub peaks: usize,
    /// Its mean pointwise bound over every (row, position) where it is the input.
    pub mean_pointwise: f64,
    /// How many (row, position) pairs that mean is over.
    pub occurrences: usize,
}

/// `mi_analysis.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiAnalysis {
    /// The checkpoint analysed.
    pub step: u64,
    /// Candidates per query.
    pub k: usize,
    /// log K, the ceiling of the bound.
    pub log_k: f64,
    /// The options used.
    pub options: MiAnalysisOptions,
    /// The critic's training loss over its last 20 steps (to judge whether it converged).
    pub critic_final_loss: f64,
    /// The bound per target position (positions with a future of at least one token).
    pub per_position: Vec<PositionBound>,
    /// Tokens ordered by how many rows peak on them (at most 10). Pointwise values are compared
    /// as they are, so with targets of varying length a position that fewer rows reach (a lower
    /// ceiling) peaks less often.
    pub peak_tokens: Vec<TokenPeak>,
}

#[derive(Module, Debug)]
struct Critic<B: burn::tensor::backend::Backend> {
    encoder: FutureEncoder<B>,
    scorer: Scorer<B>,
}

/// One target position's InfoNCE term in one batch.
struct Term<B: burn::tensor::backend::Backend> {
    /// The target position.
    position: usize,
    /// The InfoNCE loss.
    loss: Tensor<B, 1>,
    /// log of the candidates per query.
    log_k: f64,
    /// The batch rows that reach this position, in the order of `scores`.
    rows: Vec<usize>,
    /// Scores of every row's state against every row's summary, `[n, n]`.
    scores: Tensor<B, 2>,
}

impl<B: burn::tensor::backend::Backend> Term<B> {
    /// Each row's pointwise bound, log n + log softmax(scores)[i, i], read in one transfer
    /// (only measurement needs it; training uses the loss alone).
    fn pointwise(&self) -> Vec<f64> {
        let n = self.rows.len();
        let m = log_softmax(self.scores.clone(), 1).into_data().convert::<f32>().to_vec::<f32>().expect("f32 scores");
        (0..n).map(|i| m[i * n + i] as f64 + (n as f64).ln()).collect()
    }
}

/// The InfoNCE terms of every target position with a future, for one batch of frozen hidden
/// states `[b, t, d]`.
fn batch_terms<B: burn::tensor::backend::Backend>(
    critic: &Critic<B>,
    hidden: Tensor<B, 3>,
    prefix_lens: &[usize],
    lens: &[usize],
    horizon: usize,
) -> Vec<Term<B>> {
    let [b, t, d] = hidden.dims();
    let device = hidden.device();
    let window = future_window(lens, t, horizon);
    let summaries = critic.encoder.forward(hidden.clone(), hidden.clone(), &window); // [b, t, s]
    let s = summaries.dims()[2];
    let (flat_h, flat_f) = (hidden.reshape([b * t, d]), summaries.reshape([b * t, s]));
    let longest = prefix_lens.iter().zip(lens).map(|(p, l)| l - p).max().unwrap_or(0);
    let mut out = Vec::new();
    for position in 1..=longest {
        // Rows where h_t (the input t = p + pos − 2 predicting target token pos) has a future:
        // t + 1 <= len − 2, the last input.
        let rows: Vec<usize> = (0..b).filter(|&r| prefix_lens[r] + position < lens[r]).collect();
        if rows.len() < 2 {
            continue;
        }
        let index: Vec<i32> = rows.iter().map(|&r| (r * t + prefix_lens[r] + position - 2) as i32).collect();
        let n = index.len();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
        let h = flat_h.clone().select(0, index.clone());
        let f = flat_f.clone().select(0, index);
        let scores = critic.scorer.scores(h, f);
        let seq: Vec<usize> = (0..n).collect();
        let (loss, log_k) = info_nce(scores.clone(), 1.0, Negatives::Batch, &seq);
        out.push(Term { position, loss, log_k, rows, scores });
    }
    out
}

/// Analyses the latest checkpoint of `run`.
pub fn analyse<B: AutodiffBackend>(run: &Path, options: &MiAnalysisOptions, device: &B::Device) -> Result<MiAnalysis> {
    if options.k < 2 || options.horizon == 0 || options.steps == 0 {
        bail!("the MI analysis needs k >= 2, horizon >= 1 and steps >= 1");
    }
    let config = RunConfig::load(&run_dir::RunDir(run).config(), &[])
        .with_context(|| format!("{} is not a run directory", run.display()))?;
    let checkpoint = run_dir::latest(run)?;
    let (step, meta) = (checkpoint.step, &checkpoint.meta);
    if meta.reads == run_dir::Direction::Reverse {
        bail!("{} is a right-to-left LM: its states summarise the past, not the future", run.display());
    }
    let loaded = config.data.load(&config.task, true)?;
    let task = loaded.task;
    let pad = task.vocab().dummy();
    let gpt = run_dir::load_gpt::<B>(&checkpoint, device)?.valid();
    let d = meta.model.d_model;

    // The bilinear score is a product of three maps; at GPT-2's 0.02 its gradients start
    // vanishingly small, so the critic is drawn at the 1/sqrt(fan-in) scale.
    let std = (1.0 / d as f64).sqrt();
    fn new_critic<C: burn::tensor::backend::Backend>(d: usize, dim: usize, std: f64, device: &C::Device) -> Critic<C> {
        Critic {
            encoder: FutureEncoder::new(PoolerKind::Mean, d, dim, std, device),
            scorer: Scorer::new(ScorerKind::Bilinear, d, dim, std, device),
        }
    }
    let frozen = |rows: &[&Example]| {
        let batch = Batch::<B::InnerBackend>::new(rows, pad, device);
        let hidden = gpt.forward(batch.inputs.clone()).hidden;
        (Tensor::<B, 3>::from_inner(hidden), batch.prefix_lens.clone(), batch.lens())
    };

    // Training: batches of K training rows, drawn without replacement per epoch.
    let dim = options.summary_dim;
    let how = CriticTraining { seed: options.seed, steps: options.steps, batch: options.k, lr: options.lr };
    let draw = || (new_critic::<Flex>(d, dim, std, &FlexDevice), new_critic::<B>(d, dim, std, device));
    let trained = critic::train(
        how,
        loaded.train.len(),
        draw,
        |critic: &Critic<B>, batch| {
            let rows: Vec<&Example> = batch.iter().map(|&i| &loaded.train[i]).collect();
            let (hidden, prefix_lens, lens) = frozen(&rows);
            let terms = batch_terms(critic, hidden, &prefix_lens, &lens, options.horizon);
            if terms.is_empty() {
                bail!("no target position of this task has a future to summarise");
            }
            let count = terms.len() as f64;
            Ok(terms.into_iter().map(|term| term.loss).reduce(|a, b| a + b).expect("non-empty") / count)
        },
        device,
    )?;
    let critic_final_loss = trained.final_loss;

    // Measurement on whole batches of K test rows.
    let critic = trained.critic.valid();
    let n = (options.examples.min(loaded.test.len()) / options.k) * options.k;
    if n == 0 {
        bail!("the test split has fewer than K = {} rows", options.k);
    }
    let mut per_pos: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    let mut log_ks = Vec::new();
    let mut best: Vec<Option<(f64, u32)>> = vec![None; n];
    let mut by_token: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
    for (c, chunk) in loaded.test[..n].chunks(options.k).enumerate() {
        let rows: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::<B::InnerBackend>::new(&rows, pad, device);
        let hidden = gpt.forward(batch.inputs.clone()).hidden;
        for term in batch_terms(&critic, hidden, &batch.prefix_lens, &batch.lens(), options.horizon) {
            let (pos, log_k, rows) = (term.position, term.log_k, term.rows.len());
            let pointwise = term.pointwise();
            let loss: f64 = term.loss.into_scalar().elem();
            let e = per_pos.entry(pos).or_insert((0.0, 0.0, 0));
            e.0 += (log_k - loss) * rows as f64;
            e.1 += log_k * rows as f64;
            e.2 += rows;
            log_ks.push(log_k);
            for (&r, value) in term.rows.iter().zip(pointwise) {
                let ex = &chunk[r];
                let token = ex.tokens[ex.prefix_len + pos - 2];
                let t = by_token.entry(token).or_insert((0.0, 0));
                t.0 += value;
                t.1 += 1;
                let slot = &mut best[c * options.k + r];
                if slot.is_none_or(|(v, _)| value > v) {
                    *slot = Some((value, token));
                }
            }
        }
    }
    let mut peaks: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, token) in best.into_iter().flatten() {
        *peaks.entry(token).or_default() += 1;
    }
    let vocab = task.vocab();
    let mut peak_tokens: Vec<TokenPeak> = peaks
        .into_iter()
        .map(|(token, count)| {
            let (sum, occ) = by_token[&token];
            TokenPeak {
                token: vocab.decode(&[token]),
                peaks: count,
                mean_pointwise: sum / occ as f64,
                occurrences: occ,
            }
        })
        .collect();
    peak_tokens.sort_by(|a, b| b.peaks.cmp(&a.peaks).then(a.token.cmp(&b.token)));
    peak_tokens.truncate(10);
    Ok(MiAnalysis {
        step,
        k: options.k,
        log_k: log_ks.iter().sum::<f64>() / log_ks.len().max(1) as f64,
        options: options.clone(),
        critic_final_loss,
        per_position: per_pos
            .into_iter()
            .map(|(position, (sum, ceiling, rows))| PositionBound {
                position,
                bound: sum / rows as f64,
                log_k: ceiling / rows as f64,
                rows,
            })
            .collect(),
        peak_tokens,
    })
}

impl MiAnalysis {
    /// A table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "InfoNCE bound on I(h_t; F_t), F_t = mean(h_(t+1..t+{})), K = {} (log K = {:.3} nats), critic trained {} steps \
             (final loss {:.3})\n\n{:<18}{:>10}{:>8}\n",
            self.options.horizon,
            self.k,
            self.log_k,
            self.options.steps,
            self.critic_final_loss,
            "target position",
            "bound",
            "rows"
        );
        for p in &self.per_position {
            let _ = writeln!(out, "{:<18}{:>10.3}{:>8}", p.position, p.bound, p.rows);
        }
        let _ = writeln!(out, "\n{:<12}{:>8}{:>16}{:>13}", "peak token", "peaks", "mean pointwise", "occurrences");
        for t in &self.peak_tokens {
            let _ = writeln!(out, "{:<12}{:>8}{:>16.3}{:>13}", t.token, t.peaks, t.mean_pointwise, t.occurrences);
        }
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

    /// States where each row's future is its present: every position of row r holds the same
    /// vector v_r, so F_t = h_t and the critic can learn to match them; the bound must rise
    /// well above where a random critic starts, towards log K.
    #[test]
    fn the_critic_finds_information_where_there_is_some() {
        let (k, t, d) = (16usize, 6usize, 8usize);
        let device = FlexDevice;
        let critic: Critic<B> = models::seeded::<B, _>(3, &device, || {
            let std = (1.0 / d as f64).sqrt();
            let c = Critic {
                encoder: FutureEncoder::new(PoolerKind::Mean, d, 8, std, &device),
                scorer: Scorer::new(ScorerKind::Bilinear, d, 8, std, &device),
            };
            let _ = c.num_params();
            c
        });
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let draw = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            use rand::Rng;
            (0..k * d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        };
        let states = |v: &[f32]| -> Tensor<B, 3> {
            let x: Vec<f32> = (0..k).flat_map(|r| (0..t).flat_map(move |_| v[r * d..(r + 1) * d].to_vec())).collect();
            Tensor::from_data(TensorData::new(x, [k, t, d]), &device)
        };
        // Prompts of 2 tokens and rows of 7: target positions 1..=5, positions 1..=4 have a future.
        let (prefix, lens) = (vec![2; k], vec![7; k]);
        let bound = |critic: &Critic<B>, v: &[f32]| -> f64 {
            let terms = batch_terms(critic, states(v), &prefix, &lens, 2);
            assert_eq!(terms.len(), 4);
            terms.iter().map(|t| t.log_k - t.loss.clone().into_scalar().elem::<f64>()).sum::<f64>() / 4.0
        };
        let test = draw(&mut rng);
        let before = bound(&critic, &test);
        let mut optim = AdamWConfig::new().init::<B, Critic<B>>();
        let mut critic = critic;
        for _ in 0..150 {
            let v = draw(&mut rng);
            let terms = batch_terms(&critic, states(&v), &prefix, &lens, 2);
            let loss = terms.into_iter().map(|t| t.loss).reduce(|a, b| a + b).unwrap() / 4.0;
            let grads = GradientsParams::from_grads(loss.backward(), &critic);
            critic = optim.step(3e-3, critic, grads);
        }
        let after = bound(&critic, &test);
        let log_k = (k as f64).ln();
        assert!(
            before < 0.2 * log_k && after > 0.7 * log_k && after <= log_k,
            "bound {before} -> {after} (log K {log_k})"
        );
    }
}

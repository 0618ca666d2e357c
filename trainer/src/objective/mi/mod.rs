//! The MI-shaped future-aware objective (docs/method.md, §9), the objective the lab exists for, as
//! a composition of parts that the config switches on and off:
//!
//! - future encoder ([`super::future`]): F_t = Pooler(s_{t+1..t+L}) over per-position states s:
//!   scheme B's, the LM's own hidden states (live, stop-gradient, or those of a frozen copy of
//!   an LM), which have read the prompt; or the future tokens alone (`future-tokens`:
//!   s_j = GELU(W e(x_j)) with the GPT's token embedding held fixed, a mean + MLP summary that
//!   cannot see the prompt, the "causally clean" summary of docs/method.md, §9.3.3);
//! - InfoNCE between h_t and F_t ([`super::infonce`]), logged with its bound log K − L and K;
//!   negatives from the batch, or counterfactual: the summaries of the futures the same prompt
//!   would have had down another path (the task's `counterfactual_targets`; path-star: K = d; graph-walk:
//!   K = out-degree, walks of the same length to other goals),
//!   which only a state that knows the plan can tell from the true one;
//! - the token-level reward over TopK ∪ {x_{t+1}} from a rollout head
//!   ([`super::token_reward`]), trained with reward-weighted log-probabilities;
//! - L = L_NTP + λ_InfoNCE · L_InfoNCE + λ_RL · L_token-RL (+ λ_rollout · L_rollout, which trains
//!   only the rollout head), with the λs on a schedule: constant, joint (λ_RL ramps up,
//!   λ_InfoNCE down) or two-stage (stage 1: NTP + InfoNCE; stage 2: the future encoder frozen,
//!   NTP + token-RL).
//!
//! h_t is the GPT's final hidden state (after the last LayerNorm). The terms apply at positions
//! that predict a target token and have a future (x_{t+2} exists), as in `fsp-*`.

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::{Gpt, GptConfig, linear_rows};
use tasks::Task;

use super::frozen::{Serves, load_frozen};
use super::future::{FutureEncoder, PoolerKind, future_window};
use super::infonce::{Negatives, Scorer, info_nce, info_nce_among, unit_rows};
use super::reverse_lm::{future_depth, reverse_rows};
use super::token_reward::{RolloutHead, action_set, mean_entropy, reward_weighted_nll, rewards};
use super::{
    BuildContext, Heads, LabModel, LossOutput, Objective, at_batch_positions, heads, host_rows, masked_cross_entropy,
    masked_cross_entropy_from,
};

mod config;
mod loss;
mod negatives;
mod on_policy;

pub use config::{EncoderInput, MiConfig, MiSchedule, RewardKind, Weights};

/// The parameters the MI objective adds.
#[derive(Module, Debug)]
pub struct MiHeads<B: Backend> {
    /// The future encoder (pooler + projection).
    pub encoder: FutureEncoder<B>,
    /// f(h, F).
    pub scorer: Scorer<B>,
    /// F̂(h, a).
    pub rollout: RolloutHead<B>,
    /// The per-token layer of `encoder_input = "future-tokens"` (absent otherwise, and in
    /// checkpoints written before it existed).
    pub tokens: Option<Linear<B>>,
    /// The right-to-left LM of `encoder_input = "reverse-lm"` (scheme A).
    pub reverse: Option<Gpt<B>>,
    /// The far summary's encoder and scorer (`far_horizon > 0`).
    pub far_encoder: Option<FutureEncoder<B>>,
    /// See `far_encoder`.
    pub far_scorer: Option<Scorer<B>>,
}

/// The MI-shaped objective; see the module docs.
pub struct Mi<B: AutodiffBackend> {
    config: MiConfig,
    frozen_lm: Option<Gpt<B::InnerBackend>>,
    model: GptConfig,
    vocab: usize,
    /// The task, for its counterfactual futures and (path-star) the decision's reward mass.
    task: Box<dyn Task>,
}

impl<B: AutodiffBackend> Mi<B> {
    /// Checks the parameters and loads the frozen LM, if one is asked for.
    pub fn new(config: &MiConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        let vocab = cx.task.vocab().len();
        if config.horizon == 0 || config.summary_dim == 0 {
            bail!("objective.horizon and objective.summary_dim must be positive");
        }
        if config.far_horizon != 0 && config.far_horizon <= config.horizon {
            bail!("objective.far_horizon must be 0 (one horizon) or longer than objective.horizon");
        }
        if config.top_k == 0 || config.top_k >= vocab {
            bail!("objective.top_k must be between 1 and the vocabulary size - 1 ({})", vocab - 1);
        }
        if config.temperature <= 0.0 || config.reward_tau <= 0.0 {
            bail!("objective.temperature and objective.reward_tau must be positive");
        }
        let weights = [config.lambda_infonce, config.lambda_rl, config.lambda_rollout, config.lambda_gt];
        if weights.iter().any(|&x| !x.is_finite() || x < 0.0) {
            bail!("objective.lambda_infonce, lambda_rl, lambda_rollout and lambda_gt must be finite and >= 0");
        }
        let frozen_lm = match (config.encoder_input, &config.frozen_lm_run) {
            (EncoderInput::FrozenCopy, Some(run)) => Some(load_frozen::<B::InnerBackend>(
                run,
                "objective.frozen_lm_run",
                Serves::ForwardLm,
                cx.model,
                cx.device,
            )?),
            (EncoderInput::FrozenCopy, None) => {
                bail!("objective.encoder_input = \"frozen-copy\" needs objective.frozen_lm_run (a finished run)")
            }
            (_, Some(_)) => bail!("objective.frozen_lm_run is read only with encoder_input = \"frozen-copy\""),
            (_, None) => None,
        };
        let task = cx.task.spec().build().map_err(|e| anyhow::anyhow!("{e}"))?;
        if config.encoder_input.future_only() && config.pooler == PoolerKind::Attention {
            // The attention pooler's query is the pooled states' own s_t, not h_t: with a
            // future-only encoder it would read x_t, which differs between a future and its
            // counterfactuals after the decision and gives the scorer a cue that needs no plan.
            bail!("objective.pooler = \"attention\" is defined for scheme B; future-only encoders pool by the mean");
        }
        if config.negatives.counterfactual() || config.reward == RewardKind::OnPolicy {
            // Both score futures that did not happen: the negatives' or the candidates'.
            let what = match config.negatives.counterfactual() {
                true => format!("objective.negatives = {:?}", config.negatives),
                false => "objective.reward = \"on-policy\"".to_string(),
            };
            if !config.encoder_input.future_only() {
                bail!(
                    "{what} needs a future-only encoder (encoder_input = \"future-tokens\" or \
                     \"reverse-lm\"): \
                     a summary of hidden states that read the prompt cannot be computed for a future that did not \
                     happen without running the LM on it"
                );
            }
            let probe = cx.train.first().cloned().unwrap_or_else(|| {
                use rand::SeedableRng;
                task.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
            });
            match task.counterfactual_targets(&probe) {
                Some(alt) if !alt.is_empty() => {
                    // A spliced negative swaps inner nodes of the answer (all but its first and last).
                    let inner = probe.target().len().saturating_sub(2);
                    if config.negatives.spliced() && inner == 0 {
                        bail!(
                            "objective.negatives = {:?}: the answers of task {} have no inner nodes to swap",
                            config.negatives,
                            task.spec().name()
                        );
                    }
                    if config.negatives == Negatives::NearSwap && !(1..=inner).contains(&config.swap_depth) {
                        bail!(
                            "objective.swap_depth = {} must be between 1 and the answer's {inner} inner nodes",
                            config.swap_depth
                        );
                    }
                }
                _ => bail!(
                    "{what}: task {} has no counterfactual futures (path-star and graph-walk have them); use \
                     negatives = \"batch\" or \"other-sequences\" and reward = \"label\"",
                    task.spec().name()
                ),
            }
        }
        Ok(Mi { config: config.clone(), frozen_lm, model: cx.model.clone(), vocab, task })
    }

    /// The λs at optimizer step `step`.
    pub fn weights(&self, step: u64) -> Weights {
        let c = &self.config;
        match c.schedule {
            MiSchedule::Constant => Weights { infonce: c.lambda_infonce, rl: c.lambda_rl, encoder_frozen: false },
            MiSchedule::Joint => {
                let f = if c.ramp_steps == 0 { 1.0 } else { (step as f64 / c.ramp_steps as f64).min(1.0) };
                Weights {
                    infonce: c.lambda_infonce * (1.0 - f * (1.0 - c.final_infonce_ratio)),
                    rl: c.lambda_rl * f,
                    encoder_frozen: false,
                }
            }
            MiSchedule::TwoStage if step < c.stage1_steps => {
                Weights { infonce: c.lambda_infonce, rl: 0.0, encoder_frozen: false }
            }
            MiSchedule::TwoStage => Weights { infonce: 0.0, rl: c.lambda_rl, encoder_frozen: true },
        }
    }
}

/// Flat indices (`row * t + position`) of the positions that predict a target token and have a
/// future, with the row of each: positions prefix_len - 1 ..= len - 3.
pub fn future_positions(prefix_lens: &[usize], target_lens: &[usize], t: usize) -> (Vec<i32>, Vec<usize>) {
    let (mut index, mut rows) = (Vec::new(), Vec::new());
    for (r, (&p, &q)) in prefix_lens.iter().zip(target_lens).enumerate() {
        let len = p + q;
        for i in p.saturating_sub(1)..len.saturating_sub(2).min(t) {
            index.push((r * t + i) as i32);
            rows.push(r);
        }
    }
    (index, rows)
}

fn constant<B: Backend>(x: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(vec![x as f32], [1]), device)
}

impl<B: AutodiffBackend> Objective<B> for Mi<B> {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let (c, d, std) = (&self.config, self.model.d_model, self.model.init_std);
        Some(Heads::Mi(MiHeads {
            encoder: FutureEncoder::new(c.pooler, d, c.summary_dim, std, device),
            scorer: Scorer::new(c.scorer, d, c.summary_dim, std, device),
            rollout: RolloutHead::new(d, c.summary_dim, std, device),
            tokens: (c.encoder_input == EncoderInput::FutureTokens)
                .then(|| LinearConfig::new(d, d).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device)),
            reverse: (c.encoder_input == EncoderInput::ReverseLm).then(|| self.model.init(device)),
            far_encoder: (c.far_horizon > 0).then(|| FutureEncoder::new(c.pooler, d, c.summary_dim, std, device)),
            far_scorer: (c.far_horizon > 0).then(|| Scorer::new(c.scorer, d, c.summary_dim, std, device)),
        }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64) -> LossOutput<B> {
        self.loss_from(model, batch, step, batch.first_target())
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;

    use super::super::infonce::ScorerKind;
    use super::super::test_util::*;
    use super::loss::future_states;
    use super::*;

    fn mi(config: MiConfig) -> Mi<B> {
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        let mut m = Mi::new(&config, &cx).unwrap();
        m.vocab = 12; // the test batch's vocabulary
        m
    }

    #[test]
    fn positions_with_a_future() {
        // Rows of test_util::batch: (prefix, target) = (3, 4), (2, 2), (4, 3); t = 6.
        let (index, rows) = future_positions(&[3, 2, 4], &[4, 2, 3], 6);
        assert_eq!(index, [2, 3, 4, 7, 15, 16]);
        assert_eq!(rows, [0, 0, 0, 1, 2, 2]);
    }

    #[test]
    fn schedules() {
        let base =
            MiConfig { lambda_infonce: 0.4, lambda_rl: 2.0, stage1_steps: 10, ramp_steps: 10, ..Default::default() };
        let two = mi(base.clone());
        assert_eq!(two.weights(9), Weights { infonce: 0.4, rl: 0.0, encoder_frozen: false });
        assert_eq!(two.weights(10), Weights { infonce: 0.0, rl: 2.0, encoder_frozen: true });
        let joint = mi(MiConfig { schedule: MiSchedule::Joint, final_infonce_ratio: 0.5, ..base.clone() });
        assert_eq!(joint.weights(0), Weights { infonce: 0.4, rl: 0.0, encoder_frozen: false });
        let mid = joint.weights(5);
        assert!((mid.infonce - 0.3).abs() < 1e-12 && (mid.rl - 1.0).abs() < 1e-12);
        let end = joint.weights(50);
        assert!((end.infonce - 0.2).abs() < 1e-12 && (end.rl - 2.0).abs() < 1e-12);
        let constant = mi(MiConfig { schedule: MiSchedule::Constant, ..base });
        assert_eq!(constant.weights(1000), Weights { infonce: 0.4, rl: 2.0, encoder_frozen: false });
    }

    #[test]
    fn the_total_is_the_weighted_sum_of_its_parts_and_the_bound_is_log_k_minus_the_loss() {
        let obj = mi(MiConfig {
            schedule: MiSchedule::Constant,
            lambda_infonce: 0.3,
            lambda_rl: 0.7,
            lambda_rollout: 0.2,
            ..Default::default()
        });
        let m = model(&obj, &tiny());
        let out = obj.loss(&m, &batch(), 0);
        let p: Vec<f64> = out.parts.iter().map(|(_, x)| scalar(x.clone()) as f64).collect();
        let want = p[0] + 0.3 * p[1] + 0.7 * p[2] + 0.2 * p[3];
        assert!((scalar(out.total) as f64 - want).abs() < 1e-5);
        let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
        // Six positions with a future, all negatives of one another: K = 6.
        assert!((stat("mi_log_k") - 6f64.ln()).abs() < 1e-6);
        assert!((stat("mi_bound") - (6f64.ln() - p[1])).abs() < 1e-5);
        assert!((0.0..=1.0).contains(&stat("reward_gt")));
        assert!(stat("entropy") > 0.0 && stat("entropy") <= 12f64.ln() + 1e-6);
    }

    #[test]
    fn rewards_carry_no_gradient() {
        // The token-RL gradient on the logits is exactly that of −Σ r log π with r held fixed:
        // compare against the same loss with the rewards entered as data.
        let obj = mi(MiConfig {
            schedule: MiSchedule::Constant,
            lambda_infonce: 0.0,
            lambda_rollout: 0.0,
            ..Default::default()
        });
        let m = model(&obj, &tiny());
        let out = obj.loss(&m, &batch(), 0);
        let rl = out.parts.iter().find(|(n, _)| n == "token_rl").unwrap().1.clone();
        let grads = rl.backward();
        // The rollout head and the encoder get nothing from the token-RL term.
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        struct Any<'a>(&'a <B as AutodiffBackend>::Gradients, usize);
        impl burn::module::ModuleVisitor<B> for Any<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                if p.val().grad(self.0).is_some() {
                    self.1 += 1;
                }
            }
        }
        let mut any = Any(&grads, 0);
        h.rollout.visit(&mut any);
        h.encoder.visit(&mut any);
        h.scorer.visit(&mut any);
        assert_eq!(any.1, 0, "the reward is a constant: no gradient flows through it");
        // While the policy (the GPT) does get one: the check above can see gradients.
        let mut policy = Any(&grads, 0);
        m.gpt.visit(&mut policy);
        assert!(policy.1 > 0);
    }

    #[test]
    fn the_future_encoder_is_unchanged_in_stage_two() {
        let obj = mi(MiConfig { stage1_steps: 1, ..Default::default() });
        let m = model(&obj, &tiny());
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        let (enc, scorer) = (params(&h.encoder), params(&h.scorer));
        // Step 1 is in stage 2.
        let loss = obj.loss(&m, &batch(), 1).total;
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
        let m =
            burn::optim::Optimizer::step(&mut burn::optim::AdamWConfig::new().init::<B, LabModel<B>>(), 1e-2, m, grads);
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        assert_eq!(params(&h.encoder), enc);
        assert_eq!(params(&h.scorer), scorer);
        // In stage 1 both learn.
        let m = model(&obj, &tiny());
        let m = step(&obj, m, &batch());
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        assert_ne!(params(&h.encoder), enc);
        assert_ne!(params(&h.scorer), scorer);
    }

    /// A path-star G(2,4,10) batch, the task, and a model config of its vocabulary.
    fn path_star_case() -> (Box<dyn Task>, Batch<B>, GptConfig) {
        use rand::SeedableRng;
        let spec = tasks::TaskSpec::PathStar(tasks::path_star::PathStarParams {
            degree: 2,
            path_len: 4,
            nodes: 10,
            reverse: false,
        });
        let task = spec.build().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let examples: Vec<tasks::Example> = (0..4).map(|_| task.sample(&mut rng)).collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), task.vocab().dummy(), &FlexDevice);
        let config = GptConfig::tiny(task.vocab().len(), 32).with_d_model(16).with_d_ff(32).with_init_std(0.1);
        (task, batch, config)
    }

    fn mi_on(task: &dyn Task, model: &GptConfig, config: MiConfig) -> Result<Mi<B>> {
        Mi::new(&config, &BuildContext::<B> { task, train: &[], model, device: &FlexDevice })
    }

    #[test]
    fn skipping_the_prompt_changes_no_term() {
        // Every encoder input, pooler, scorer and kind of negatives, both stages, on path-star
        // rows whose first target is position 20: the loss with the LM's last block run from
        // there on equals the full pass in every part, statistic and gradient. A term that read
        // a state before the first target would read zeros there and differ.
        let (task, batch, config) = path_star_case();
        assert!(batch.first_target() >= 20, "first target {}", batch.first_target());
        let constant =
            MiConfig { schedule: MiSchedule::Constant, lambda_infonce: 0.3, lambda_rl: 0.7, ..Default::default() };
        let cases = [
            ("two-stage, stage 1", MiConfig::default(), 0, false),
            ("two-stage, stage 2", MiConfig::default(), 10_000, false),
            (
                "live, attention pooler, bilinear scorer, other sequences",
                MiConfig {
                    pooler: PoolerKind::Attention,
                    scorer: ScorerKind::Bilinear,
                    negatives: Negatives::OtherSequences,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "stop-gradient, mlp scorer, far horizon",
                MiConfig {
                    encoder_input: EncoderInput::StopGradient,
                    scorer: ScorerKind::Mlp,
                    far_horizon: 6,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "future tokens, counterfactual negatives",
                MiConfig {
                    encoder_input: EncoderInput::FutureTokens,
                    negatives: Negatives::Counterfactual,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "future tokens, depth-graded negatives",
                MiConfig {
                    encoder_input: EncoderInput::FutureTokens,
                    negatives: Negatives::DepthGraded,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "future tokens, near-swap negatives, on-policy reward",
                MiConfig {
                    encoder_input: EncoderInput::FutureTokens,
                    negatives: Negatives::NearSwap,
                    reward: RewardKind::OnPolicy,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "reverse LM, counterfactual and batch negatives",
                MiConfig {
                    encoder_input: EncoderInput::ReverseLm,
                    negatives: Negatives::CounterfactualBatch,
                    ..constant.clone()
                },
                0,
                false,
            ),
            // Built as `live` (a frozen copy is loaded from a run), then given another LM below.
            ("frozen copy", constant.clone(), 0, true),
        ];
        for (what, mi_config, step, frozen_copy) in cases {
            let mut obj = mi_on(task.as_ref(), &config, mi_config).unwrap();
            if frozen_copy {
                obj.config.encoder_input = EncoderInput::FrozenCopy;
                obj.frozen_lm = Some(config.init_seeded(3, &FlexDevice));
            }
            let m = model(&obj, &config);
            assert_same_loss(&m, obj.loss_from(&m, &batch, step, 0), obj.loss(&m, &batch, step), what);
        }
    }

    #[test]
    fn without_its_loss_the_reverse_lm_reads_only_as_deep_as_the_windows() {
        // The states every window can read (original positions from the prompt's end to the
        // second-to-last token) are those of the reverse LM over whole rows.
        let (_, batch, config) = path_star_case();
        let (reverse, gpt) = (config.init_seeded::<B>(5, &FlexDevice), config.init_seeded::<B>(6, &FlexDevice));
        let (whole, loss) = future_states(None, Some(&reverse), &gpt, &batch, true);
        let (cut, none) = future_states(None, Some(&reverse), &gpt, &batch, false);
        assert!(loss.is_some() && none.is_none());
        let [_, t, d] = whole.dims();
        let (whole, cut) = (whole.into_data().to_vec::<f32>().unwrap(), cut.into_data().to_vec::<f32>().unwrap());
        let mut compared = 0;
        for (r, (&p, len)) in batch.prefix_lens.iter().zip(batch.lens()).enumerate() {
            for j in p..=len - 2 {
                let at = (r * t + j) * d;
                for (x, y) in whole[at..at + d].iter().zip(&cut[at..at + d]) {
                    assert!((x - y).abs() <= 1e-5 + 1e-4 * x.abs(), "row {r}, position {j}: {x} against {y}");
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 4 * 3, "four rows of four target tokens, whose last is never read");
    }

    #[test]
    fn future_only_summaries_do_not_see_the_prompt() {
        let (task, batch, config) = path_star_case();
        let summaries = |encoder_input, batch: &Batch<B>| {
            let obj = mi_on(task.as_ref(), &config, MiConfig { encoder_input, ..Default::default() }).unwrap();
            let m = model(&obj, &config);
            let Some(Heads::Mi(h)) = &m.heads else { panic!() };
            let out = m.gpt.forward(batch.inputs.clone());
            let states = match encoder_input {
                EncoderInput::FutureTokens | EncoderInput::ReverseLm => {
                    future_states(h.tokens.as_ref(), h.reverse.as_ref(), &m.gpt, batch, false).0
                }
                _ => out.hidden,
            };
            let [_, t, _] = states.dims();
            let w = future_window(&batch.lens(), t, 4);
            let f = h.encoder.forward(states.clone(), states, &w);
            let (index, _) = future_positions(&batch.prefix_lens, &batch.target_lens, t);
            let [b, _, s] = f.dims();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(index.clone(), [index.len()]), &FlexDevice);
            f.reshape([b * t, s]).select(0, idx).into_data().to_vec::<f32>().unwrap()
        };
        // The same futures after other prompts: the first edge and the goal token changed.
        let examples: Vec<tasks::Example> = host_rows(&batch)
            .iter()
            .zip(&batch.prefix_lens)
            .map(|(row, &p)| {
                let mut tokens: Vec<u32> = row.iter().map(|&x| x as u32).collect();
                tokens[0] = (tokens[0] + 1) % 10;
                tokens[p - 2] = (tokens[p - 2] + 3) % 10;
                // And the last token (the goal, again): no window reaches it, and scheme A's
                // reverse LM must not read it first.
                let last = tokens.len() - 1;
                tokens[last] = (tokens[last] + 5) % 10;
                tasks::Example { tokens, prefix_len: p }
            })
            .collect();
        let other = Batch::new(&examples.iter().collect::<Vec<_>>(), task.vocab().dummy(), &FlexDevice);
        assert_ne!(host_rows(&other), host_rows(&batch));
        for future_only in [EncoderInput::FutureTokens, EncoderInput::ReverseLm] {
            assert_eq!(summaries(future_only, &batch), summaries(future_only, &other), "{future_only:?}");
        }
        // Scheme B's summaries read hidden states that read the prompt: they change (the leak).
        assert_ne!(summaries(EncoderInput::Live, &batch), summaries(EncoderInput::Live, &other));
    }

    #[test]
    fn counterfactual_negatives_are_the_other_arms_and_k_is_d() {
        let (task, batch, config) = path_star_case();
        let base = MiConfig {
            encoder_input: EncoderInput::FutureTokens,
            schedule: MiSchedule::Constant,
            ..Default::default()
        };
        let obj =
            mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::Counterfactual, ..base.clone() }).unwrap();
        let m = model(&obj, &config);
        let out = obj.loss(&m, &batch, 0);
        let stat = |out: &LossOutput<B>, name: &str| {
            scalar(out.stats.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.clone()) as f64
        };
        // One counterfactual future per anchor (d = 2): K = 2.
        assert!((stat(&out, "mi_log_k") - 2f64.ln()).abs() < 1e-6);
        let bound = stat(&out, "mi_bound");
        assert!(bound <= 2f64.ln() + 1e-6, "the bound is at most log d, got {bound}");
        // The decision position's reward is split between the goal's arm and the other arm.
        let (arm, others) = (stat(&out, "decision_reward_arm"), stat(&out, "decision_reward_other_arms"));
        assert!(arm > 0.0 && arm + others <= 1.0 + 1e-6, "{arm} + {others}");
        // Adding the batch's summaries: K = n + 1 for every anchor (n = 4 rows × 4 positions).
        let both =
            mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::CounterfactualBatch, ..base.clone() })
                .unwrap();
        let out = both.loss(&model(&both, &config), &batch, 0);
        let (index, _) = future_positions(&batch.prefix_lens, &batch.target_lens, batch.inputs.dims()[1]);
        assert!((stat(&out, "mi_log_k") - ((index.len() + 1) as f64).ln()).abs() < 1e-6);
        // The counterfactual InfoNCE trains the encoder, the scorer and the token layer.
        let m = model(&obj, &config);
        let Some(Heads::Mi(h0)) = &m.heads else { panic!() };
        let (enc, tok) = (params(&h0.encoder), params(h0.tokens.as_ref().unwrap()));
        let loss = obj.loss(&m, &batch, 0).total;
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
        let m =
            burn::optim::Optimizer::step(&mut burn::optim::AdamWConfig::new().init::<B, LabModel<B>>(), 1e-2, m, grads);
        let Some(Heads::Mi(h1)) = &m.heads else { panic!() };
        assert_ne!(params(&h1.encoder), enc);
        assert_ne!(params(h1.tokens.as_ref().unwrap()), tok);
    }

    #[test]
    fn spliced_negatives_take_the_one_hop_shortcut_away_and_leave_the_plan() {
        // The shortcut that won the counterfactual contrast (LOG.md, 2026-12-01 (later)): a state
        // that knows the goal's parent (one edge back from the goal the prompt names) and nothing
        // of the path. As a critic it scores a candidate future by whether its window holds that
        // node, scaled until the softmax is hard. Against the other arms' futures it wins at every
        // anchor; against spliced negatives it ties one wherever the window holds the decision.
        // A state that knows the path (scoring the window's agreement with the true one) wins
        // against every kind, so the candidates the loss keeps are all separable.
        use super::negatives::candidate_flags;
        let (task, batch, config) = path_star_case();
        let [_, t] = batch.inputs.dims();
        let (index, _) = future_positions(&batch.prefix_lens, &batch.target_lens, t);
        let n = index.len();
        let horizon = MiConfig::default().horizon;
        let loss_of = |negatives: Negatives| {
            let obj = mi_on(
                task.as_ref(),
                &config,
                MiConfig { negatives, encoder_input: EncoderInput::FutureTokens, ..Default::default() },
            )
            .unwrap();
            let alt = obj.alternatives(&batch).unwrap();
            let m = alt.per_row;
            let differs = negatives.spliced().then(|| alt.differs(&index, t, horizon));
            let keep = candidate_flags(n, m, false, differs.as_deref());
            let window = |tokens: &[u32], k: i32| {
                let i = k as usize % t;
                tokens[i + 1..=(i + horizon).min(tokens.len() - 2)].to_vec()
            };
            // Per anchor: (loss of the shortcut, loss of the planner, whether the window holds
            // the decision, the answer's second node).
            let mut out = Vec::new();
            for (i, &k) in index.iter().enumerate() {
                let r = k as usize / t;
                let truth = &alt.truth[r];
                let parent = truth[truth.len() - 2];
                let decision = batch.prefix_lens[r] + 1;
                let mut windows = vec![Vec::new(); n + n * m];
                windows[i] = window(truth, k);
                for a in 0..m {
                    windows[n + i * m + a] = window(&alt.tokens[r * m + a], k);
                }
                let row = &keep[i * windows.len()..(i + 1) * windows.len()];
                let losses: Vec<f64> = [
                    |w: &[u32], _: &[u32], parent: u32| w.contains(&parent) as u32 as f32,
                    |w: &[u32], truth: &[u32], _| w.iter().zip(truth).filter(|(x, y)| x == y).count() as f32,
                ]
                .iter()
                .map(|score| {
                    let scores: Vec<f32> = windows.iter().map(|w| 50.0 * score(w, &windows[i], parent)).collect();
                    let scores = Tensor::<B, 2>::from_data(TensorData::new(scores, [1, windows.len()]), &FlexDevice);
                    scalar(info_nce_among(scores, 1.0, &[i], row).0) as f64
                })
                .collect();
                let holds_decision = (k as usize % t) < decision && decision <= (k as usize % t) + horizon;
                out.push((losses[0], losses[1], holds_decision, row.iter().sum::<f32>() > 1.0));
            }
            out
        };
        for (i, (shortcut, planner, _, has_negatives)) in loss_of(Negatives::Counterfactual).into_iter().enumerate() {
            assert!(
                has_negatives && shortcut < 1e-6 && planner < 1e-6,
                "counterfactual, anchor {i}: {shortcut} {planner}"
            );
        }
        for negatives in [Negatives::NearSwap, Negatives::DepthGraded] {
            let anchors = loss_of(negatives);
            assert!(anchors.iter().filter(|a| a.2).count() >= 8, "two anchors per row hold the decision");
            for (i, (shortcut, planner, holds_decision, has_negatives)) in anchors.into_iter().enumerate() {
                assert!(planner < 1e-6, "{negatives:?}, anchor {i}: a state that knows the path loses {planner}");
                if holds_decision {
                    assert!(has_negatives, "{negatives:?}, anchor {i}");
                    assert!(shortcut >= 2f64.ln() - 1e-6, "{negatives:?}, anchor {i}: the shortcut wins ({shortcut})");
                }
            }
        }
    }

    #[test]
    fn spliced_negatives_swap_inner_nodes_and_need_some() {
        let truth = [1, 2, 3, 4, 9];
        let others = [vec![1, 5, 6, 7, 8]];
        assert_eq!(super::negatives::negative_answers(Negatives::NearSwap, 2, &truth, &others), [vec![1, 5, 6, 4, 9]]);
        assert_eq!(
            super::negatives::negative_answers(Negatives::DepthGraded, 0, &truth, &others),
            [vec![1, 5, 3, 4, 9], vec![1, 2, 6, 4, 9], vec![1, 2, 3, 7, 9]]
        );
        let (task, _, config) = path_star_case();
        let base = MiConfig { encoder_input: EncoderInput::FutureTokens, ..Default::default() };
        for (negatives, swap_depth, ok) in [
            (Negatives::NearSwap, 1, true),
            (Negatives::NearSwap, 2, true),
            (Negatives::NearSwap, 0, false),
            (Negatives::NearSwap, 3, false), // G(2,4,10)'s answers have two inner nodes
            (Negatives::DepthGraded, 0, true),
        ] {
            let r = mi_on(task.as_ref(), &config, MiConfig { negatives, swap_depth, ..base.clone() });
            assert_eq!(r.is_ok(), ok, "{negatives:?}, swap_depth {swap_depth}");
            if let Err(e) = r {
                assert!(e.to_string().contains("swap_depth"), "{e}");
            }
        }
        // Without a future-only encoder, or on a task without counterfactual futures: refused.
        let e = mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::DepthGraded, ..Default::default() })
            .err()
            .unwrap();
        assert!(e.to_string().contains("future-only encoder"), "{e}");
        let recall = tasks::TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let cfg = GptConfig::tiny(recall.vocab().len(), 96).with_d_model(16);
        let e = mi_on(recall.as_ref(), &cfg, MiConfig { negatives: Negatives::NearSwap, ..base }).err().unwrap();
        assert!(e.to_string().contains("no counterfactual futures"), "{e}");
    }

    #[test]
    fn spliced_negatives_train_and_count_their_candidates() {
        // G(2,4,10), horizon 4, anchors `=` (window s a1 a2), s (a1 a2) and a1 (a2). Near-swap
        // (a1 swapped): candidates 2, 2, 1 (at a1 the negative is the positive); depth-graded
        // (a1, then a2 swapped): 3, 3, 2.
        let (task, batch, config) = path_star_case();
        for (negatives, want) in [
            (Negatives::NearSwap, (2f64.ln() * 2.0) / 3.0),
            (Negatives::DepthGraded, (3f64.ln() * 2.0 + 2f64.ln()) / 3.0),
        ] {
            let obj = mi_on(
                task.as_ref(),
                &config,
                MiConfig {
                    negatives,
                    encoder_input: EncoderInput::FutureTokens,
                    schedule: MiSchedule::Constant,
                    ..Default::default()
                },
            )
            .unwrap();
            let m = model(&obj, &config);
            let out = obj.loss(&m, &batch, 0);
            let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            assert!((stat("mi_log_k") - want).abs() < 1e-6, "{negatives:?}: log K {}", stat("mi_log_k"));
            assert!(stat("mi_bound") <= stat("mi_log_k") + 1e-6);
            assert!(scalar(out.total).is_finite());
        }
    }

    #[test]
    fn the_on_policy_reward_is_not_the_label() {
        // A critic that cannot read h_t (its query map zeroed: every future scores the same)
        // gives the seed's reward a decision that still favours the goal's arm (it scores against
        // the true future and adds λ_gt), and the on-policy reward an even split between the two
        // arms: without the label, the reward knows only what the state knows.
        let (task, batch, config) = path_star_case();
        struct Zero;
        impl burn::module::ModuleMapper<B> for Zero {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<Tensor<B, D>>,
            ) -> burn::module::Param<Tensor<B, D>> {
                p.map(|x| x.zeros_like())
            }
        }
        let decision = |reward: RewardKind| {
            let obj = mi_on(
                task.as_ref(),
                &config,
                MiConfig {
                    reward,
                    encoder_input: EncoderInput::FutureTokens,
                    negatives: Negatives::Counterfactual,
                    schedule: MiSchedule::Constant,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut m = model(&obj, &config);
            if let Some(Heads::Mi(h)) = m.heads.take() {
                m.heads = Some(Heads::Mi(MiHeads { scorer: h.scorer.map(&mut Zero), ..h }));
            }
            let out = obj.loss(&m, &batch, 0);
            let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            assert!(scalar(out.total.clone()).is_finite());
            (stat("decision_reward_arm"), stat("decision_reward_other_arms"))
        };
        let (arm, other) = decision(RewardKind::Label);
        assert!(arm > other + 0.5, "the seed's reward copies the label: {arm} against {other}");
        let (arm, other) = decision(RewardKind::OnPolicy);
        assert!((arm - 0.5).abs() < 1e-5 && (other - 0.5).abs() < 1e-5, "{arm} against {other}");
    }

    #[test]
    fn the_on_policy_reward_needs_futures_it_can_roll_out() {
        let (task, _, config) = path_star_case();
        let on_policy = MiConfig { reward: RewardKind::OnPolicy, ..Default::default() };
        let e = mi_on(task.as_ref(), &config, on_policy.clone()).err().unwrap();
        assert!(e.to_string().contains("reward = \"on-policy\" needs a future-only encoder"), "{e}");
        let recall = tasks::TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let cfg = GptConfig::tiny(recall.vocab().len(), 96).with_d_model(16);
        let future_tokens = MiConfig { encoder_input: EncoderInput::FutureTokens, ..on_policy };
        let e = mi_on(recall.as_ref(), &cfg, future_tokens).err().unwrap();
        assert!(e.to_string().contains("no counterfactual futures"), "{e}");
    }

    #[test]
    fn scheme_a_trains_its_reverse_lm_by_its_own_loss_and_takes_counterfactual_negatives() {
        let (task, batch, config) = path_star_case();
        let obj = mi_on(
            task.as_ref(),
            &config,
            MiConfig {
                encoder_input: EncoderInput::ReverseLm,
                negatives: Negatives::Counterfactual,
                schedule: MiSchedule::Constant,
                ..Default::default()
            },
        )
        .unwrap();
        let m = model(&obj, &config);
        let out = obj.loss(&m, &batch, 0);
        let names: Vec<&str> = out.parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ntp", "infonce", "token_rl", "rollout", "reverse_lm"]);
        let log_k = scalar(out.stats.iter().find(|(n, _)| n == "mi_log_k").unwrap().1.clone()) as f64;
        assert!((log_k - 2f64.ln()).abs() < 1e-6);
        // The InfoNCE term gives the reverse LM no gradient: its states are read held fixed.
        let nce = out.parts.iter().find(|(n, _)| n == "infonce").unwrap().1.clone();
        let grads = nce.backward();
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        struct Any<'a>(&'a <B as AutodiffBackend>::Gradients, usize);
        impl burn::module::ModuleVisitor<B> for Any<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                self.1 += p.val().grad(self.0).is_some() as usize;
            }
        }
        let mut any = Any(&grads, 0);
        h.reverse.as_ref().unwrap().visit(&mut any);
        assert_eq!(any.1, 0);
    }

    #[test]
    fn a_far_summary_adds_its_own_contrast() {
        let (task, batch, config) = path_star_case();
        for negatives in [Negatives::Batch, Negatives::Counterfactual] {
            let mc = MiConfig {
                encoder_input: EncoderInput::FutureTokens,
                negatives,
                horizon: 1,
                far_horizon: 3,
                schedule: MiSchedule::Constant,
                lambda_infonce: 0.5,
                ..Default::default()
            };
            let obj = mi_on(task.as_ref(), &config, mc).unwrap();
            let m = model(&obj, &config);
            let out = obj.loss(&m, &batch, 0);
            let part = |name: &str| scalar(out.parts.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            let log_k = stat("mi_log_k");
            assert!((stat("mi_bound_far") - (log_k - part("infonce_far"))).abs() < 1e-5);
            let want = part("ntp") + 0.5 * (part("infonce") + part("infonce_far")) + part("token_rl") + part("rollout");
            assert!((scalar(out.total.clone()) as f64 - want).abs() < 1e-4, "{negatives:?}");
            // The two horizons summarise different windows, so their contrasts differ.
            assert_ne!(part("infonce"), part("infonce_far"));
        }
        let bad = MiConfig { horizon: 4, far_horizon: 4, ..Default::default() };
        assert!(mi_on(task.as_ref(), &config, bad).is_err());
    }

    #[test]
    fn counterfactual_negatives_need_a_future_only_encoder_and_a_task_that_has_them() {
        let (task, _, config) = path_star_case();
        let e = mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::Counterfactual, ..Default::default() })
            .err()
            .unwrap();
        assert!(e.to_string().contains("future-only encoder"), "{e}");
        let recall = tasks::TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let cfg = GptConfig::tiny(recall.vocab().len(), 96).with_d_model(16);
        let counterfactual = MiConfig {
            negatives: Negatives::Counterfactual,
            encoder_input: EncoderInput::FutureTokens,
            ..Default::default()
        };
        let e = mi_on(recall.as_ref(), &cfg, counterfactual.clone()).err().unwrap();
        assert!(e.to_string().contains("no counterfactual futures"), "{e}");
    }

    #[test]
    fn graph_walk_takes_counterfactual_walks_to_other_goals() {
        use rand::SeedableRng;
        let walk = tasks::TaskSpec::GraphWalk(tasks::long_range::GraphWalkParams { nodes: 8, out_degree: 3, steps: 3 })
            .build()
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let examples: Vec<tasks::Example> = (0..4).map(|_| walk.sample(&mut rng)).collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), walk.vocab().dummy(), &FlexDevice);
        let cfg = GptConfig::tiny(walk.vocab().len(), 96).with_d_model(16).with_d_ff(32);
        let config = MiConfig {
            negatives: Negatives::Counterfactual,
            encoder_input: EncoderInput::FutureTokens,
            schedule: MiSchedule::Constant,
            ..Default::default()
        };
        let obj = mi_on(walk.as_ref(), &cfg, config).unwrap();
        let out = obj.loss(&model(&obj, &cfg), &batch, 0);
        let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
        // out_degree - 1 = 2 counterfactual walks per anchor: K = 3.
        assert!((stat("mi_log_k") - 3f64.ln()).abs() < 1e-6);
        assert!(stat("mi_bound") <= 3f64.ln() + 1e-6);
        assert!(scalar(out.total).is_finite());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        for bad in [
            MiConfig { top_k: 0, ..Default::default() },
            MiConfig { reward_tau: 0.0, ..Default::default() },
            MiConfig { lambda_infonce: -0.1, ..Default::default() },
            MiConfig { lambda_gt: f64::NAN, ..Default::default() },
            MiConfig { encoder_input: EncoderInput::FrozenCopy, ..Default::default() },
            MiConfig { frozen_lm_run: Some("x".into()), ..Default::default() },
        ] {
            assert!(Mi::new(&bad, &cx).is_err(), "{bad:?}");
        }
    }
}

//! The MI objective's loss: NTP, InfoNCE between h_t and the future summary F_t, and the
//! token-level reward from the rollout head, weighted by the schedule's λs; and the future-only
//! encoders' per-position states.

use super::negatives::{at_anchors, candidate_flags, decision_mass};
use super::*;

impl<B: AutodiffBackend> Mi<B> {
    /// The loss with the LM's last block run on positions `from..t` alone (`Gpt::forward_from`).
    /// From the first target on (`Batch::first_target`) that is the loss over every position:
    /// NTP reads the targets, the anchors are target positions, and the summaries of scheme B
    /// (the LM's own states, or a frozen copy's) pool positions after an anchor. The states of
    /// earlier positions are zeros (`at_batch_positions`) that no term reads; the test
    /// `skipping_the_prompt_changes_no_term` compares every variant with the full pass.
    pub(super) fn loss_from(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64, from: usize) -> LossOutput<B> {
        let Heads::Mi(h) = heads(model) else { unreachable!("mi builds its heads") };
        let c = &self.config;
        let w = self.weights(step);
        let device = batch.inputs.device();
        let out = model.gpt.forward_from(batch.inputs.clone(), from);
        let ntp = masked_cross_entropy_from(out.logits.clone(), from, batch);
        let (hidden, logits) = (at_batch_positions(out.hidden, from), at_batch_positions(out.logits, from));
        let (index, rows) = future_positions(&batch.prefix_lens, &batch.target_lens, batch.inputs.dims()[1]);
        if index.is_empty() {
            return LossOutput::single("ntp", ntp);
        }
        let [b, t, d] = hidden.dims();
        let (n, s, v) = (index.len(), c.summary_dim, self.vocab);
        let index_host = index.clone();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
        let pick = |x: Tensor<B, 3>, width: usize| x.reshape([b * t, width]).select(0, index.clone());

        // Future summaries of every position, then those with a future.
        let mut reverse_loss = None;
        // No gradient reaches the encoder when it is frozen (stage 2) or InfoNCE is only
        // measured (λ = 0): the rollout head's target is detached.
        let no_encoder_gradient = w.encoder_frozen || w.infonce == 0.0;
        let untracked_cell = std::cell::OnceCell::new();
        let untracked =
            |h: &MiHeads<B>, model: &LabModel<B>| untracked_cell.get_or_init(|| Untracked::new(h, &model.gpt));
        let states = match (c.encoder_input, &self.frozen_lm) {
            (EncoderInput::Live, _) => hidden.clone(),
            (EncoderInput::StopGradient, _) => hidden.clone().detach(),
            (EncoderInput::FrozenCopy, Some(lm)) => {
                Tensor::from_inner(at_batch_positions(lm.forward_from(batch.inputs.clone().inner(), from).hidden, from))
            }
            (EncoderInput::FrozenCopy, None) => unreachable!("checked when built"),
            (EncoderInput::FutureTokens, _) if no_encoder_gradient => untracked(h, model).future_states(batch),
            (EncoderInput::FutureTokens | EncoderInput::ReverseLm, _) => {
                let (states, reverse_lm) =
                    future_states(h.tokens.as_ref(), h.reverse.as_ref(), &model.gpt, batch, true);
                reverse_loss = reverse_lm;
                states
            }
        };
        let lens = batch.lens();
        // The decision's reward mass is read for forward path-star answers (whose second token is
        // the arm's first node).
        let forward_star = self.task.as_path_star().is_some_and(|p| !p.params().reverse);
        let host = c.negatives.counterfactual() || forward_star;
        let alternatives = host.then(|| self.alternatives(batch)).flatten();
        // Checked when built: the task has counterfactual futures. A batch whose rows do not (a
        // malformed prompt) must not quietly fall back to in-batch negatives.
        assert!(
            alternatives.is_some() || !c.negatives.counterfactual(),
            "counterfactual negatives: a row of the batch has no counterfactual futures of the answer's length"
        );
        let alt_states = match (&alternatives, c.negatives.counterfactual()) {
            // The counterfactual futures' reverse-LM states are detached and its loss is not
            // taken on them, so they never need a gradient.
            (Some(alt), true) if no_encoder_gradient || c.encoder_input == EncoderInput::ReverseLm => {
                Some(untracked(h, model).future_states(&alt.batch))
            }
            (Some(alt), true) => Some(future_states(h.tokens.as_ref(), None, &model.gpt, &alt.batch, false).0),
            _ => None,
        };
        let hs = pick(hidden, d); // [n, d]

        // One contrast: the summaries F_t at `horizon` of the anchors, and InfoNCE of h_t against
        // them. The candidates of each anchor are its own summary and those the negatives name
        // (columns 0..n the batch's summaries; after them, anchor-major, each anchor's
        // counterfactual summaries). With λ = 0 InfoNCE is only measured, on the inner backend,
        // so that no gradient (not even a zero one, which AdamW's momentum would still act on)
        // reaches the scorer.
        let contrast = |encoder: &FutureEncoder<B>, scorer: &Scorer<B>, horizon: usize| {
            let window = future_window(&lens, t, horizon);
            // An encoder no gradient reaches runs on the inner backend (see `Untracked`).
            let encode = |states: &Tensor<B, 3>, window: &[f32]| match no_encoder_gradient {
                true => {
                    Tensor::from_inner(encoder.valid().forward(states.clone().inner(), states.clone().inner(), window))
                }
                false => encoder.forward(states.clone(), states.clone(), window),
            };
            let summaries = encode(&states, &window); // [b, t, s]
            let f = pick(summaries, s); // [n, s]
            let (candidates, keep) = match (&alternatives, &alt_states) {
                (Some(alt), Some(alt_states)) => {
                    let m = alt.per_row;
                    let alt_lens: Vec<usize> = lens.iter().flat_map(|&l| std::iter::repeat_n(l, m)).collect();
                    let alt_window = future_window(&alt_lens, t, horizon);
                    let alt_summaries = encode(alt_states, &alt_window); // [b m, t, s]
                    let picked = at_anchors(alt_summaries, &index_host, &rows, m); // [n m, s]
                    // Spliced negatives are candidates only where they differ from the positive.
                    let differs = c.negatives.spliced().then(|| alt.differs(&index_host, t, horizon));
                    let with_batch = c.negatives == Negatives::CounterfactualBatch;
                    let keep = candidate_flags(n, m, with_batch, differs.as_deref());
                    (Tensor::cat(vec![f.clone(), picked], 0), Some(keep))
                }
                _ => (f.clone(), None),
            };
            let positives: Vec<usize> = (0..n).collect();
            let (nce, log_k) = if w.infonce > 0.0 {
                let scores = scorer.scores(hs.clone(), candidates);
                match &keep {
                    Some(keep) => info_nce_among(scores, c.temperature, &positives, keep),
                    None => info_nce(scores, c.temperature, c.negatives, &rows),
                }
            } else {
                let scores = scorer.valid().scores(hs.clone().inner(), candidates.inner());
                let (loss, log_k) = match &keep {
                    Some(keep) => info_nce_among(scores, c.temperature, &positives, keep),
                    None => info_nce(scores, c.temperature, c.negatives, &rows),
                };
                (Tensor::from_inner(loss), log_k)
            };
            (f, nce, log_k)
        };
        let (f, nce, log_k) = contrast(&h.encoder, &h.scorer, c.horizon);
        let far = match (&h.far_encoder, &h.far_scorer) {
            (Some(encoder), Some(scorer)) => Some(contrast(encoder, scorer, c.far_horizon)),
            _ => None,
        };

        // The token-level reward.
        let logits = pick(logits, v); // [n, v]
        let gt = batch.targets.clone().reshape([b * t]).select(0, index);
        let (actions, valid, is_gt) = action_set(logits.clone().detach(), gt, c.top_k);
        let embedded = model.gpt.embed_tokens(actions.clone()).detach(); // [n, k + 1, d]
        let predicted = h.rollout.forward(hs.clone().detach(), embedded); // [n, k + 1, s]
        let target = f.detach();
        let predicted_gt = (predicted.clone() * is_gt.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([n, s]);
        let rollout = (unit_rows(predicted_gt) * unit_rows(target.clone())).sum().neg() / n as f64 + 1.0;
        let (actions, reward, reward_gt) = match c.reward {
            RewardKind::Label => {
                let reward = rewards(predicted.detach(), target, valid, is_gt.clone(), c.lambda_gt, c.reward_tau);
                let gt_mass = (reward.clone() * is_gt).sum() / n as f64;
                (actions, reward, gt_mass)
            }
            RewardKind::OnPolicy => {
                // The rolled-out futures are the counterfactual ones: those the negatives already
                // built, unless they were spliced from them.
                let plain = alternatives.as_ref().filter(|_| !c.negatives.spliced());
                let (actions, reward, gt_mass) =
                    self.on_policy(untracked(h, model), batch, plain, &target, &hs, &index_host, &rows, &logits);
                (actions, reward, constant(gt_mass, &device))
            }
        };
        let decision = alternatives
            .as_ref()
            .filter(|_| forward_star)
            .map(|alt| decision_mass(alt, batch, &index_host, t, &actions, &reward));
        let rl = reward_weighted_nll(logits.clone(), actions, reward.clone());

        let mut total = ntp.clone()
            + nce.clone().mul_scalar(w.infonce)
            + rl.clone().mul_scalar(w.rl)
            + rollout.clone().mul_scalar(c.lambda_rollout);
        let mut stats = vec![
            ("mi_bound".to_string(), nce.clone().neg() + log_k),
            ("mi_log_k".to_string(), constant(log_k, &device)),
            ("reward_gt".to_string(), reward_gt),
            ("entropy".to_string(), mean_entropy(logits.detach())),
            ("lambda_infonce".to_string(), constant(w.infonce, &device)),
            ("lambda_rl".to_string(), constant(w.rl, &device)),
        ];
        if let Some((arm, others)) = decision {
            stats.push(("decision_reward_arm".to_string(), constant(arm, &device)));
            stats.push(("decision_reward_other_arms".to_string(), constant(others, &device)));
        }
        let mut parts = vec![
            ("ntp".to_string(), ntp),
            ("infonce".to_string(), nce),
            ("token_rl".to_string(), rl),
            ("rollout".to_string(), rollout),
        ];
        if let Some(lm) = reverse_loss {
            total = total + lm.clone();
            parts.push(("reverse_lm".to_string(), lm));
        }
        if let Some((_, nce_far, log_k_far)) = far {
            total = total + nce_far.clone().mul_scalar(w.infonce);
            stats.push(("mi_bound_far".to_string(), nce_far.clone().neg() + log_k_far));
            parts.push(("infonce_far".to_string(), nce_far));
        }
        LossOutput { total, parts, stats }
    }
}

/// The per-position states a future-only encoder pools, `[b, t, d]` in the batch's layout, and
/// (scheme A, when `with_loss`) the reverse LM's own loss on the batch. Generic over the backend
/// so that states no gradient may reach are computed on the inner one (see [`Untracked`]).
pub(super) fn future_states<R: Backend>(
    tokens: Option<&Linear<R>>,
    reverse: Option<&Gpt<R>>,
    gpt: &Gpt<R>,
    batch: &Batch<R>,
    with_loss: bool,
) -> (Tensor<R, 3>, Option<Tensor<R, 1>>) {
    let Some(reverse) = reverse else {
        // GELU(W e(x_j)) with the GPT's token embedding held fixed (no positions: the summary
        // of a future does not depend on where it is).
        let layer = tokens.expect("future-tokens builds its token layer");
        return (gelu(linear_rows(layer, gpt.embed_tokens(batch.inputs.clone()).detach())), None);
    };
    // The reverse LM reads each row without its last token: it would read it first, and on
    // path-star that is the goal, which every state h_t after the prompt knows, so a summary
    // holding it would tell the true future from the other arms' without any plan. The windows
    // never reach the last token either (`future_window`).
    let [b, t] = batch.inputs.dims();
    let device = batch.inputs.device();
    let shortened: Vec<tasks::Example> = host_rows(batch)
        .iter()
        .zip(&batch.prefix_lens)
        .map(|(row, &p)| {
            let tokens: Vec<u32> = row[..row.len() - 1].iter().map(|&x| x as u32).collect();
            tasks::Example { prefix_len: p.min(tokens.len()), tokens }
        })
        .collect();
    let shortened = Batch::<R>::new(&shortened.iter().collect::<Vec<_>>(), 0, &device);
    let rev = reverse_rows(&shortened);
    // Without its loss the reverse LM is read only inside the windows, from the prompt's end on
    // (the counterfactual futures' states: a pass over as many rows as the batch's, most of them
    // prompt), so it stops at `future_depth`.
    let inputs = match with_loss {
        true => rev.inputs.clone(),
        false => rev.inputs.clone().slice([0..b, 0..future_depth(batch)]),
    };
    let out = reverse.forward(inputs);
    let lm = with_loss.then(|| masked_cross_entropy(out.logits, rev.targets, rev.mask));
    // Reversed position p holds the state after reading x_{len-2} down to x_{len-2-p}: the state
    // of original position j is at p = len - 2 - j. Position 0 (which would need the whole
    // sequence), the last token and padding are never in a window; they take position 0.
    let [_, tr, d] = out.hidden.dims();
    let mut index = Vec::with_capacity(b * t);
    for &len in &batch.lens() {
        index.extend((0..t).map(|j| if j >= 1 && j + 2 <= len && len - 2 - j < tr { (len - 2 - j) as i32 } else { 0 }));
    }
    let index = Tensor::<R, 2, Int>::from_data(TensorData::new(index, [b, t]), &device);
    let states = out.hidden.detach().gather(1, index.unsqueeze_dim::<3>(2).expand([b, t, d]));
    (states, lm)
}

/// The modules of a step on the inner backend, for what no gradient may reach: the future
/// encoder when it is frozen (stage 2) or InfoNCE is only measured, and the counterfactual
/// futures' reverse-LM states.
///
/// Computing those on the autodiff backend and detaching the result is not enough: the graph
/// hangs off parameters that get no gradient that step, so the optimizer keeps them (and their
/// graph) alive, and burn never frees it. Stage 2 of a future-only encoder grew by 1.7-3.2 MB a
/// step that way (LOG.md, 2026-12-01).
pub(super) struct Untracked<B: AutodiffBackend> {
    pub(super) heads: MiHeads<B::InnerBackend>,
    gpt: Gpt<B::InnerBackend>,
}

impl<B: AutodiffBackend> Untracked<B> {
    pub(super) fn new(heads: &MiHeads<B>, gpt: &Gpt<B>) -> Self {
        Untracked { heads: heads.valid(), gpt: gpt.valid() }
    }

    /// [`future_states`] without a gradient or the reverse LM's loss.
    pub(super) fn future_states(&self, batch: &Batch<B>) -> Tensor<B, 3> {
        let inner = Batch {
            inputs: batch.inputs.clone().inner(),
            targets: batch.targets.clone().inner(),
            target_mask: batch.target_mask.clone().inner(),
            prefix_lens: batch.prefix_lens.clone(),
            target_lens: batch.target_lens.clone(),
        };
        let h = &self.heads;
        Tensor::from_inner(future_states(h.tokens.as_ref(), h.reverse.as_ref(), &self.gpt, &inner, false).0)
    }
}

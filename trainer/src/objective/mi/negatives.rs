//! The MI objective's counterfactual negatives: the futures the same prompt would have had down
//! another path (the task's `counterfactual_targets`), as a batch of the answer's layout, and the
//! reward the token reward puts on the decision's arms.

use super::*;

/// Each row's counterfactual examples, `per_row` of them per row, row-major, as a batch of the
/// same layout, and the first token of each counterfactual target (path-star: the other arms'
/// first nodes).
pub(super) struct Alternatives<B: Backend> {
    pub(super) batch: Batch<B>,
    pub(super) per_row: usize,
    /// `arms[r]`: for row r, the second target token of each counterfactual future (the node
    /// after the source: the arm it goes down), whatever the negatives spliced from them.
    pub(super) arms: Vec<Vec<u32>>,
    /// The alternatives' tokens, row-major as in `batch`, and the true rows': for the spliced
    /// negatives' windows (see [`Alternatives::differs`]).
    pub(super) tokens: Vec<Vec<u32>>,
    pub(super) truth: Vec<Vec<u32>>,
}

/// `truth` with its tokens at `at` taken from `other` (both answers of the same length).
fn splice(truth: &[u32], other: &[u32], at: std::ops::RangeInclusive<usize>) -> Vec<u32> {
    let mut out = truth.to_vec();
    out[at.clone()].copy_from_slice(&other[at]);
    out
}

/// The negatives' answers for one row, from its true answer and the task's counterfactual
/// answers: the counterfactual answers themselves, or the true one with nodes swapped in from
/// them (`near-swap`: the first `swap_depth` inner nodes; `depth-graded`: each inner node alone,
/// counterfactual-major). Inner nodes are all but the answer's first and last token.
pub(super) fn negative_answers(
    negatives: Negatives,
    swap_depth: usize,
    truth: &[u32],
    counterfactual: &[Vec<u32>],
) -> Vec<Vec<u32>> {
    let inner = truth.len().saturating_sub(2);
    match negatives {
        Negatives::NearSwap => counterfactual.iter().map(|c| splice(truth, c, 1..=swap_depth.min(inner))).collect(),
        Negatives::DepthGraded => {
            counterfactual.iter().flat_map(|c| (1..=inner).map(move |j| splice(truth, c, j..=j))).collect()
        }
        _ => counterfactual.to_vec(),
    }
}

impl<B: AutodiffBackend> Mi<B> {
    /// The batch's negative futures as inputs of the same layout (the counterfactual ones, or
    /// those spliced from them), if the task has them and every row has as many.
    pub(super) fn alternatives(&self, batch: &Batch<B>) -> Option<Alternatives<B>> {
        self.alternatives_as(batch, self.config.negatives)
    }

    /// [`Mi::alternatives`] as `negatives` would build them.
    pub(super) fn alternatives_as(&self, batch: &Batch<B>, negatives: Negatives) -> Option<Alternatives<B>> {
        let [b, t] = batch.inputs.dims();
        let rows = host_rows(batch);
        let mut per_row = None;
        let mut examples = Vec::new();
        let mut arms = Vec::with_capacity(b);
        let mut truth = Vec::with_capacity(b);
        for (r, row) in rows.iter().enumerate() {
            let p = batch.prefix_lens[r];
            let tokens: Vec<u32> = row.iter().map(|&x| x as u32).collect();
            let example = tasks::Example { tokens: tokens.clone(), prefix_len: p };
            let alt = self.task.counterfactual_targets(&example)?;
            if alt.is_empty() || alt.iter().any(|a| a.len() != tokens.len() - p) {
                return None;
            }
            arms.push(alt.iter().map(|a| a.get(1).copied().unwrap_or(u32::MAX)).collect());
            let answers = negative_answers(negatives, self.config.swap_depth, &tokens[p..], &alt);
            if *per_row.get_or_insert(answers.len()) != answers.len() {
                return None;
            }
            for target in answers {
                let mut tokens: Vec<u32> = tokens[..p].to_vec();
                tokens.extend(target);
                examples.push(tasks::Example { tokens, prefix_len: p });
            }
            truth.push(tokens);
        }
        let per_row = per_row?;
        let refs: Vec<&tasks::Example> = examples.iter().collect();
        let alt = Batch::new(&refs, self.task.vocab().dummy(), &batch.inputs.device());
        let tokens = examples.into_iter().map(|e| e.tokens).collect();
        // Counterfactual targets have the answer's length, so the layouts agree.
        (alt.inputs.dims()[1] == t).then_some(Alternatives { batch: alt, per_row, arms, tokens, truth })
    }
}

impl<B: Backend> Alternatives<B> {
    /// `[n m]`, anchor-major: whether alternative a of anchor i (flat index `row * t + position`
    /// in `index`) differs from the true future inside the anchor's window at `horizon` (the
    /// inputs `position + 1 ..= position + horizon`, never the last token: `future_window`).
    /// A spliced negative that does not is the positive itself: no state could tell them apart,
    /// so it is no candidate (its tie would only add log 2 to the loss and to log K).
    pub(super) fn differs(&self, index: &[i32], t: usize, horizon: usize) -> Vec<bool> {
        let m = self.per_row;
        let mut out = Vec::with_capacity(index.len() * m);
        for &k in index {
            let (r, i) = (k as usize / t, k as usize % t);
            let truth = &self.truth[r];
            let last = (i + horizon).min(truth.len().saturating_sub(2)).min(t.saturating_sub(1));
            for a in 0..m {
                let alt = &self.tokens[r * m + a];
                out.push((i + 1..=last).any(|j| alt[j] != truth[j]));
            }
        }
        out
    }
}

/// The alternatives' summaries `[b m, t, s]` (row-major as `Alternatives::batch`) at their
/// anchors' positions: `[n m, s]`, anchor-major (`index[i]` = `row * t + position`, `rows[i]` its
/// row).
pub(super) fn at_anchors<R: Backend>(summaries: Tensor<R, 3>, index: &[i32], rows: &[usize], m: usize) -> Tensor<R, 2> {
    let [bm, t, s] = summaries.dims();
    let flat: Vec<i32> = index
        .iter()
        .zip(rows)
        .flat_map(|(&k, &r)| (0..m).map(move |a| ((r * m + a) * t + k as usize - r * t) as i32))
        .collect();
    let n = flat.len();
    let device = summaries.device();
    summaries.reshape([bm * t, s]).select(0, Tensor::<R, 1, Int>::from_data(TensorData::new(flat, [n]), &device))
}

/// The candidates of each of `n` anchors (`[n, n + n m]`, row-major, 1.0 = a candidate) among
/// the columns `[the anchors' own summaries; their m alternatives' each, anchor-major]`: its own
/// summary, its alternatives (those `differs` marks, if given), and with `with_batch` every other
/// anchor's summary.
pub(super) fn candidate_flags(n: usize, m: usize, with_batch: bool, differs: Option<&[bool]>) -> Vec<f32> {
    let width = n + n * m;
    let mut keep = vec![0f32; n * width];
    for i in 0..n {
        if with_batch {
            keep[i * width..i * width + n].fill(1.0);
        }
        keep[i * width + i] = 1.0;
        for a in 0..m {
            let candidate = differs.is_none_or(|d| d[i * m + a]);
            keep[i * width + n + i * m + a] = if candidate { 1.0 } else { 0.0 };
        }
    }
    keep
}

/// At the decision position of each row (path-star: target position 2, input position
/// prefix_len), the reward the action set puts on the goal's arm (the true next node) and the
/// total it puts on the other arms' first nodes, averaged over rows.
pub(super) fn decision_mass<B: Backend>(
    alt: &Alternatives<B>,
    batch: &Batch<B>,
    index: &[i32],
    t: usize,
    actions: &Tensor<B, 2, Int>,
    reward: &Tensor<B, 2>,
) -> (f64, f64) {
    let [_, c] = actions.dims();
    let acts = actions.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    let rew = reward.clone().into_data().convert::<f32>().to_vec::<f32>().expect("floats");
    let targets = batch.targets.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    let (mut arm, mut others, mut rows) = (0.0, 0.0, 0);
    for (r, &p) in batch.prefix_lens.iter().enumerate() {
        let Some(k) = index.iter().position(|&i| i as usize == r * t + p) else { continue };
        let truth = targets[r * t + p];
        for j in 0..c {
            let (a, x) = (acts[k * c + j], rew[k * c + j] as f64);
            if a == truth {
                arm += x;
            } else if alt.arms[r].iter().any(|&o| o as i64 == a) {
                others += x;
            }
        }
        rows += 1;
    }
    let n = rows.max(1) as f64;
    (arm / n, others / n)
}

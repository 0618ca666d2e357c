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
    /// `firsts[r]`: for row r, the second target token of each alternative (the node after the
    /// source: the arm it goes down).
    pub(super) arms: Vec<Vec<u32>>,
}

impl<B: AutodiffBackend> Mi<B> {
    /// The batch's counterfactual futures as inputs of the same layout, if the task has them and
    /// every row has as many.
    pub(super) fn alternatives(&self, batch: &Batch<B>) -> Option<Alternatives<B>> {
        let [b, t] = batch.inputs.dims();
        let rows = host_rows(batch);
        let mut per_row = None;
        let mut examples = Vec::new();
        let mut arms = Vec::with_capacity(b);
        for (r, row) in rows.iter().enumerate() {
            let p = batch.prefix_lens[r];
            let example = tasks::Example { tokens: row.iter().map(|&x| x as u32).collect(), prefix_len: p };
            let alt = self.task.counterfactual_targets(&example)?;
            if *per_row.get_or_insert(alt.len()) != alt.len() || alt.is_empty() {
                return None;
            }
            arms.push(alt.iter().map(|a| a.get(1).copied().unwrap_or(u32::MAX)).collect());
            for target in alt {
                let mut tokens: Vec<u32> = row[..p].iter().map(|&x| x as u32).collect();
                tokens.extend(target);
                examples.push(tasks::Example { tokens, prefix_len: p });
            }
        }
        let per_row = per_row?;
        let refs: Vec<&tasks::Example> = examples.iter().collect();
        let alt = Batch::new(&refs, self.task.vocab().dummy(), &batch.inputs.device());
        // Counterfactual targets have the answer's length, so the layouts agree.
        (alt.inputs.dims()[1] == t).then_some(Alternatives { batch: alt, per_row, arms })
    }
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

//! `eval robustness RUN`: a path-star run scored on perturbed test sets beside its own
//! (docs/method.md, §13.2.1): does what it learned survive a change of the edge list's order, of
//! the degree, or of the path length? A model that plans reads the graph; a model that memorised
//! positions or learned the cheat for one shape does not transfer.
//!
//! Perturbations (same node count N, so the vocabulary is the run's):
//! - `edges-reshuffled`: the run's own test examples with their edge lists in a fresh random
//!   order (the training order is random too, so a sound model should not notice);
//! - `edges-sorted`: the same edges sorted by (from, to), an order training never shows;
//! - `degree+1` and `degree-1`: G(d ± 1, l, N), new graphs;
//! - `path+1` and `path-1`: G(d, l ± 1, N), new graphs.
//!
//! A variant whose sequences need more positions than the model has, or whose parameters admit
//! no graph, is listed with the reason instead of a score.

use anyhow::Result;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tasks::path_star::PathStarParams;
use tasks::{Example, Task, TaskSpec};

use burn::tensor::backend::Backend;
use models::Decoder;

use crate::{EvalOptions, TrainingTargets, evaluate, needed_positions};

/// One row of the robustness table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessRow {
    /// The perturbation (`in-distribution` for the run's own test examples).
    pub variant: String,
    /// The task the examples come from, in the registry's words.
    pub task: TaskSpec,
    /// Examples scored.
    pub examples: usize,
    /// Free-running exact match.
    pub free_exact: Option<f64>,
    /// Free-running outputs the variant's verifier accepts.
    pub free_valid: Option<f64>,
    /// Teacher-forced accuracy at the decision token (target position 2).
    pub decision: Option<f64>,
    /// Why the variant was not scored, if it was not.
    pub skipped: Option<String>,
}

/// The perturbed test sets of a path-star run and their scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    /// The checkpoint's step.
    pub step: u64,
    /// What decoded.
    pub decoder: models::DecoderKind,
    /// One row per variant, the in-distribution row first.
    pub rows: Vec<RobustnessRow>,
}

/// The test sets: (name, task spec, examples or the reason there are none).
pub fn test_sets(
    params: &PathStarParams,
    test: &[Example],
    n: usize,
    seed: u64,
) -> Vec<(String, TaskSpec, Result<Vec<Example>, String>)> {
    let own = TaskSpec::PathStar(params.clone());
    let test = &test[..n.min(test.len())];
    let reorder = |sorted: bool| -> Vec<Example> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let e = params.edges();
        test.iter()
            .map(|ex| {
                let mut edges: Vec<[u32; 2]> = (0..e).map(|i| [ex.tokens[3 * i], ex.tokens[3 * i + 1]]).collect();
                if sorted {
                    edges.sort_unstable();
                } else {
                    edges.shuffle(&mut rng);
                }
                let mut tokens = ex.tokens.clone();
                for (i, [u, v]) in edges.into_iter().enumerate() {
                    tokens[3 * i] = u;
                    tokens[3 * i + 1] = v;
                }
                Example { tokens, prefix_len: ex.prefix_len }
            })
            .collect()
    };
    let mut sets = vec![
        ("in-distribution".to_string(), own.clone(), Ok(test.to_vec())),
        ("edges-reshuffled".to_string(), own.clone(), Ok(reorder(false))),
        ("edges-sorted".to_string(), own, Ok(reorder(true))),
    ];
    let shifted = |name: &str, p: PathStarParams| {
        let spec = TaskSpec::PathStar(p);
        let examples = spec.build().map_err(|e| e.to_string()).map(|task| {
            // Stream 1, as the split generator draws test examples.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(1);
            (0..test.len()).map(|_| task.sample_test(&mut rng)).collect()
        });
        (name.to_string(), spec, examples)
    };
    let (d, l) = (params.degree, params.path_len);
    sets.push(shifted("degree+1", PathStarParams { degree: d + 1, ..params.clone() }));
    if d > 1 {
        sets.push(shifted("degree-1", PathStarParams { degree: d - 1, ..params.clone() }));
    }
    sets.push(shifted("path+1", PathStarParams { path_len: l + 1, ..params.clone() }));
    if l > 2 {
        sets.push(shifted("path-1", PathStarParams { path_len: l - 1, ..params.clone() }));
    }
    sets
}

/// Scores `model` on each test set of [`test_sets`] (greedy decoding, no pass@k).
pub fn score<B: Backend>(
    model: &Decoder<B>,
    step: u64,
    params: &PathStarParams,
    test: &[Example],
    n: usize,
    seed: u64,
    options: &EvalOptions,
) -> Robustness {
    let options = EvalOptions { examples: 0, ..options.without_pass_at_k() };
    let rows = test_sets(params, test, n, seed)
        .into_iter()
        .map(|(variant, spec, examples)| {
            let skip = |why: String| RobustnessRow {
                variant: variant.clone(),
                task: spec.clone(),
                examples: 0,
                free_exact: None,
                free_valid: None,
                decision: None,
                skipped: Some(why),
            };
            let examples = match examples {
                Ok(e) => e,
                Err(why) => return skip(why),
            };
            let task: Box<dyn Task> = spec.build().expect("built above");
            let needed = needed_positions(task.as_ref(), &examples);
            if let Some(limit) = model.position_limit().filter(|&limit| needed > limit) {
                return skip(format!("needs {needed} positions, the model has {limit} (learned positions)"));
            }
            let none = TrainingTargets::new(task.as_ref(), &[]);
            let r = evaluate(model, task.as_ref(), &examples, &none, &options);
            RobustnessRow {
                variant,
                task: spec,
                examples: r.examples,
                free_exact: Some(r.free.exact),
                free_valid: Some(r.free_valid),
                decision: r.path_star.map(|p| p.decision),
                skipped: None,
            }
        })
        .collect();
    Robustness { step, decoder: model.kind(), rows }
}

impl Robustness {
    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| test set | task | examples | free-running exact | verifier accepts | decision token |\n|---|---|---|---|---|---|\n",
        );
        let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
        for r in &self.rows {
            let task = match &r.task {
                TaskSpec::PathStar(p) => format!("G({},{},{})", p.degree, p.path_len, p.nodes),
                other => other.name().to_string(),
            };
            match &r.skipped {
                Some(why) => out.push_str(&format!("| {} | {task} | - | not scored: {why} | | |\n", r.variant)),
                None => out.push_str(&format!(
                    "| {} | {task} | {} | {} | {} | {} |\n",
                    r.variant,
                    r.examples,
                    f(r.free_exact),
                    f(r.free_valid),
                    f(r.decision)
                )),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbed_sets_are_valid_examples_of_their_tasks() {
        let params = PathStarParams { degree: 2, path_len: 4, nodes: 20, reverse: false };
        let task = TaskSpec::PathStar(params.clone()).build().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let test: Vec<Example> = (0..30).map(|_| task.sample(&mut rng)).collect();
        let sets = test_sets(&params, &test, 20, 5);
        let names: Vec<&str> = sets.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            ["in-distribution", "edges-reshuffled", "edges-sorted", "degree+1", "degree-1", "path+1", "path-1"]
        );
        for (name, spec, examples) in &sets {
            let t = spec.build().unwrap();
            let examples = examples.as_ref().unwrap();
            assert_eq!(examples.len(), 20, "{name}");
            for e in examples {
                t.check(e).unwrap_or_else(|err| panic!("{name}: {err}"));
            }
        }
        // Reordering keeps each example's instance and its answer.
        for (a, b) in test.iter().zip(sets[2].2.as_ref().unwrap()) {
            assert_eq!(task.instance_key(a), task.instance_key(b));
            assert_eq!(a.target(), b.target());
        }
        assert_ne!(sets[1].2.as_ref().unwrap()[..], test[..20], "a new order");
    }
}

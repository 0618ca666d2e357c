//! Scores from decoded outputs, and the report's three forms: metrics (for `metrics.jsonl`),
//! `eval.json`, and a table for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tasks::path_star::PathStar;
use tasks::{Example, Task};

use crate::creativity::Diversity;
use crate::pass_at_k::PassAtK;

/// Exact match and accuracy per target position for one decoding mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Share of examples whose whole target is reproduced.
    pub exact: f64,
    /// Accuracy at target positions 1, 2, ... (index 0 is position 1, as in the papers).
    pub per_position: Vec<f64>,
}

/// The Pitfalls of Next-Token Prediction's diagnostics on path-star.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathStarDiagnostics {
    /// Teacher-forced accuracy at target position 2, the first real decision (the paper's
    /// "indecipherable token": chance is 1/d).
    pub decision: f64,
    /// Share of teacher-forced predictions at positions >= 3 that equal the next node after
    /// the previous *true* node (its child; its parent for reversed targets): the Clever-Hans
    /// cheat when it is near 1 while free-running accuracy is near 1/d.
    pub clever_hans: f64,
    /// Share of free-running predictions at positions >= 3 that follow an edge from the
    /// previous *generated* node: whether the model walks the graph once it has chosen an arm.
    pub free_follows_edge: f64,
}

/// Accuracy of the examples whose deciding token sits `distance` tokens before the answer (the
/// long-range tasks' curve).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistancePoint {
    /// Positions from the last deciding token to the answer (index difference).
    pub distance: usize,
    /// Test examples at this distance.
    pub examples: usize,
    /// Teacher-forced exact match.
    pub forced_exact: f64,
    /// Free-running exact match.
    pub free_exact: f64,
    /// Free-running outputs the verifier accepts.
    pub free_valid: f64,
}

/// One mistake, for `failures.txt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Index in the test split.
    pub index: usize,
    /// The prompt, as text.
    pub prompt: String,
    /// The reference target, as text.
    pub expected: String,
    /// The free-running output, as text.
    pub free: String,
    /// The teacher-forced predictions, as text.
    pub forced: String,
    /// The verifier's reason.
    pub reason: String,
}

/// Everything an evaluation found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Examples evaluated.
    pub examples: usize,
    /// Teacher-forced: every input is the true token.
    pub forced: Scores,
    /// Free-running: greedy decoding from the prompt alone, with the KV cache.
    pub free: Scores,
    /// Share of free-running outputs that the task's verifier accepts (for tasks with many
    /// right answers this, not `free.exact`, is the score).
    pub free_valid: f64,
    /// Teacherless decoding (prompt and `$` inputs, one pass), when asked for.
    pub teacherless: Option<Scores>,
    /// Path-star diagnostics, for path-star tasks.
    pub path_star: Option<PathStarDiagnostics>,
    /// Accuracy against the distance from the deciding token to the answer, one point per
    /// distance present (long-range tasks; null for the others).
    #[serde(default)]
    pub distance: Option<Vec<DistancePoint>>,
    /// Diversity and creativity of free-running generations (creative tasks; null for the
    /// others).
    #[serde(default)]
    pub diversity: Option<Diversity>,
    /// The same for the teacherless (one-pass) outputs, when teacherless decoding is evaluated.
    #[serde(default)]
    pub teacherless_diversity: Option<Diversity>,
    /// pass@k from sampled generations (null when not asked for).
    #[serde(default)]
    pub pass_at_k: Option<PassAtK>,
    /// The first mistakes of free-running decoding.
    pub failures: Vec<Failure>,
    /// What decoded: the GPT's own head, or an objective's decoder (BST's text head).
    #[serde(default)]
    pub decoder: models::DecoderKind,
}

fn scores(examples: &[Example], predictions: &[Vec<u32>]) -> Scores {
    let longest = examples.iter().map(|e| e.target().len()).max().unwrap_or(0);
    let mut right = vec![0usize; longest];
    let mut count = vec![0usize; longest];
    let mut exact = 0;
    for (ex, pred) in examples.iter().zip(predictions) {
        let target = ex.target();
        for (i, &t) in target.iter().enumerate() {
            count[i] += 1;
            right[i] += (pred.get(i) == Some(&t)) as usize;
        }
        exact += (pred.as_slice() == target) as usize;
    }
    Scores {
        exact: ratio(exact, examples.len()),
        per_position: right.iter().zip(&count).map(|(&r, &c)| ratio(r, c)).collect(),
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn path_star_diagnostics(
    ps: &PathStar,
    examples: &[Example],
    forced: &[Vec<u32>],
    free: &[Vec<u32>],
) -> PathStarDiagnostics {
    let reverse = ps.params().reverse;
    let (mut cheat, mut cheat_n, mut follow, mut follow_n, mut decision) = (0, 0, 0, 0, 0);
    for ((ex, f), g) in examples.iter().zip(forced).zip(free) {
        let Ok(inst) = ps.parse_prompt(ex.prefix()) else { continue };
        // The node after `v` in the direction the target is written.
        let next = |v: u32| {
            if reverse { inst.edges.iter().find(|e| e.1 == v).map(|e| e.0) } else { inst.child(v) }
        };
        let target = ex.target();
        decision += (f.get(1) == target.get(1)) as usize;
        for i in 2..target.len() {
            cheat_n += 1;
            cheat += (f.get(i).copied() == next(target[i - 1])) as usize;
            if let (Some(&prev), Some(&cur)) = (g.get(i - 1), g.get(i)) {
                follow_n += 1;
                follow += (Some(cur) == next(prev)) as usize;
            }
        }
    }
    PathStarDiagnostics {
        decision: ratio(decision, examples.len()),
        clever_hans: ratio(cheat, cheat_n),
        free_follows_edge: ratio(follow, follow_n),
    }
}

fn distance_curve(
    task: &dyn Task,
    examples: &[Example],
    forced: &[Vec<u32>],
    free: &[Vec<u32>],
) -> Option<Vec<DistancePoint>> {
    let distances: Vec<usize> = examples.iter().map(|e| task.distance(e)).collect::<Option<_>>()?;
    let mut points: std::collections::BTreeMap<usize, [usize; 4]> = Default::default();
    for (((ex, f), g), d) in examples.iter().zip(forced).zip(free).zip(distances) {
        let p = points.entry(d).or_default();
        p[0] += 1;
        p[1] += (f.as_slice() == ex.target()) as usize;
        p[2] += (g.as_slice() == ex.target()) as usize;
        p[3] += task.verify(ex.prefix(), g).is_valid() as usize;
    }
    let points = points
        .into_iter()
        .map(|(distance, [n, f, g, v])| DistancePoint {
            distance,
            examples: n,
            forced_exact: ratio(f, n),
            free_exact: ratio(g, n),
            free_valid: ratio(v, n),
        })
        .collect();
    Some(points)
}

/// Scores decoded outputs against the examples (the sampled parts, diversity and pass@k, are
/// filled in by [`crate::evaluate`]).
pub fn score(
    task: &dyn Task,
    examples: &[Example],
    forced: &[Vec<u32>],
    free: &[Vec<u32>],
    teacherless: Option<&[Vec<u32>]>,
    keep_failures: usize,
) -> EvalReport {
    let vocab = task.vocab();
    let mut valid = 0;
    let mut failures = Vec::new();
    for (i, ((ex, f), g)) in examples.iter().zip(forced).zip(free).enumerate() {
        match task.verify(ex.prefix(), g) {
            tasks::Verdict::Valid => valid += 1,
            tasks::Verdict::Invalid(reason) if failures.len() < keep_failures => failures.push(Failure {
                index: i,
                prompt: vocab.decode(ex.prefix()),
                expected: vocab.decode(ex.target()),
                free: vocab.decode(g),
                forced: vocab.decode(f),
                reason,
            }),
            tasks::Verdict::Invalid(_) => {}
        }
    }
    let path_star = task.as_path_star().map(|ps| path_star_diagnostics(ps, examples, forced, free));
    EvalReport {
        examples: examples.len(),
        forced: scores(examples, forced),
        free: scores(examples, free),
        free_valid: ratio(valid, examples.len()),
        teacherless: teacherless.map(|t| scores(examples, t)),
        path_star,
        distance: if examples.is_empty() { None } else { distance_curve(task, examples, forced, free) },
        diversity: None,
        teacherless_diversity: None,
        pass_at_k: None,
        failures,
        decoder: models::DecoderKind::Gpt,
    }
}

impl EvalReport {
    /// Flat metrics for `metrics.jsonl`: `eval/forced/exact`, `eval/free/pos_2`, ...
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = Vec::new();
        let mut mode = |name: &str, s: &Scores| {
            m.push((format!("eval/{name}/exact"), s.exact));
            for (i, a) in s.per_position.iter().enumerate() {
                m.push((format!("eval/{name}/pos_{}", i + 1), *a));
            }
        };
        mode("forced", &self.forced);
        mode("free", &self.free);
        if let Some(t) = &self.teacherless {
            mode("teacherless", t);
        }
        m.push(("eval/free/valid".into(), self.free_valid));
        if let Some(d) = &self.path_star {
            m.push(("eval/path_star/decision".into(), d.decision));
            m.push(("eval/path_star/clever_hans".into(), d.clever_hans));
            m.push(("eval/path_star/free_follows_edge".into(), d.free_follows_edge));
        }
        for (name, d) in [("diversity", &self.diversity), ("teacherless_diversity", &self.teacherless_diversity)] {
            if let Some(d) = d {
                m.push((format!("eval/{name}/coherent"), d.coherent));
                m.push((format!("eval/{name}/memorized"), d.memorized));
                m.push((format!("eval/{name}/creativity"), d.creativity));
                m.push((format!("eval/{name}/diversity"), d.diversity));
            }
        }
        if let Some(p) = &self.pass_at_k {
            for k in REPORTED_K {
                if let Some(v) = p.at(k) {
                    m.push((format!("eval/pass_at_k/{k}"), v));
                }
            }
        }
        m
    }

    /// A table for people: one row per decoding mode, one column per target position.
    pub fn table(&self) -> String {
        let positions = self.forced.per_position.len();
        let decoder = match self.decoder {
            models::DecoderKind::Gpt => String::new(),
            other => format!(", decoded by the {} decoder", other.name()),
        };
        let mut out = format!("{} test examples{decoder}\n\n{:<14}{:>8}", self.examples, "decoding", "exact");
        for p in 1..=positions {
            let _ = write!(out, "{:>8}", format!("pos {p}"));
        }
        out.push('\n');
        let mut row = |name: &str, s: &Scores| {
            let _ = write!(out, "{name:<14}{:>8.3}", s.exact);
            for a in &s.per_position {
                let _ = write!(out, "{a:>8.3}");
            }
            out.push('\n');
        };
        row("teacher-forced", &self.forced);
        row("free-running", &self.free);
        if let Some(t) = &self.teacherless {
            row("teacherless", t);
        }
        let _ = writeln!(out, "\nfree-running outputs the verifier accepts: {:.3}", self.free_valid);
        if let Some(d) = &self.path_star {
            let _ = writeln!(
                out,
                "path-star: decision-token accuracy (position 2, teacher-forced) {:.3}; Clever-Hans rate {:.3}; \
                 free-running steps that follow an edge {:.3}",
                d.decision, d.clever_hans, d.free_follows_edge
            );
        }
        if let Some(points) = &self.distance {
            out.push_str(&distance_table(points));
        }
        for d in self.diversity.iter().chain(&self.teacherless_diversity) {
            let _ = writeln!(
                out,
                "\ncreative ({} prompts x {} generations, {}): coherent {:.3}, memorized {:.3} ({:.3} of coherent), \
                 creativity {:.3}, diversity {:.3}",
                d.prompts,
                d.samples_per_prompt,
                d.sampling,
                d.coherent,
                d.memorized,
                d.memorized_of_coherent,
                d.creativity,
                d.diversity
            );
        }
        if let Some(p) = &self.pass_at_k {
            let _ = write!(out, "\npass@k ({} prompts x {} samples, {}):", p.prompts, p.samples, p.sampling);
            for k in REPORTED_K {
                if let Some(v) = p.at(k) {
                    let _ = write!(out, "  @{k} {v:.3}");
                }
            }
            out.push('\n');
        }
        out
    }

    /// `failures.txt`: the first mistakes, one block each.
    pub fn failures_text(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let _ = writeln!(
                out,
                "#{}\n  prompt   {}\n  expected {}\n  free     {}   ({})\n  forced   {}\n",
                f.index, f.prompt, f.expected, f.free, f.reason, f.forced
            );
        }
        if out.is_empty() {
            out.push_str("no mistakes\n");
        }
        out
    }
}

/// The k shown in tables and logged to `metrics.jsonl` (`eval.json` keeps every k).
const REPORTED_K: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The distance curve in at most 8 bins of equal width, for the table (`eval.json` keeps every
/// distance).
fn distance_table(points: &[DistancePoint]) -> String {
    let (Some(lo), Some(hi)) = (points.first().map(|p| p.distance), points.last().map(|p| p.distance)) else {
        return String::new();
    };
    let width = (hi - lo) / 8 + 1;
    let mut out = format!("\n{:<14}{:>10}{:>10}{:>10}{:>10}\n", "distance", "examples", "forced", "free", "valid");
    for bin in points.chunk_by(|a, b| (a.distance - lo) / width == (b.distance - lo) / width) {
        let n: usize = bin.iter().map(|p| p.examples).sum();
        let mean = |f: fn(&DistancePoint) -> f64| bin.iter().map(|p| f(p) * p.examples as f64).sum::<f64>() / n as f64;
        let range = format!("{}-{}", bin[0].distance, bin[bin.len() - 1].distance);
        let _ = writeln!(
            out,
            "{range:<14}{n:>10}{:>10.3}{:>10.3}{:>10.3}",
            mean(|p| p.forced_exact),
            mean(|p| p.free_exact),
            mean(|p| p.free_valid)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use tasks::path_star::PathStarParams;

    use super::*;

    #[test]
    fn path_star_scores_by_hand() {
        let task = PathStar::new(PathStarParams::default()).unwrap();
        // Source 32, goal 12; arms 32-34-6-16-12 and 32-3-19-47-28.
        let ex = task.parse_ntf_line("32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12").unwrap();
        let examples = vec![ex.clone(), ex];
        // Row 0: the Clever-Hans model: forced right after the decision, wrong arm when free.
        // Row 1: right everywhere.
        let forced = vec![vec![32, 3, 6, 16, 12], vec![32, 34, 6, 16, 12]];
        let free = vec![vec![32, 3, 19, 47, 28], vec![32, 34, 6, 16, 12]];
        let r = score(&task, &examples, &forced, &free, None, 5);
        assert_eq!(r.forced.exact, 0.5);
        assert_eq!(r.forced.per_position, vec![1.0, 0.5, 1.0, 1.0, 1.0]);
        assert_eq!(r.free.per_position, vec![1.0, 0.5, 0.5, 0.5, 0.5]);
        assert_eq!(r.free_valid, 0.5);
        let d = r.path_star.clone().unwrap();
        assert_eq!((d.decision, d.clever_hans, d.free_follows_edge), (0.5, 1.0, 1.0));
        assert_eq!(r.failures.len(), 1);
        assert!(r.failures[0].reason.contains("ends at 28"));
        let metrics = r.metrics();
        assert!(metrics.contains(&("eval/free/pos_2".to_string(), 0.5)));
        assert!(r.table().contains("Clever-Hans rate 1.000"));
    }

    #[test]
    fn path_star_diagnostics_come_from_the_task_not_from_its_name() {
        // The report asks the task for its path-star side; no other task has one.
        for name in tasks::TaskSpec::NAMES {
            let task = tasks::TaskSpec::default_of(name).unwrap().build().unwrap();
            let mut rng = tasks::dataset::split_rng(0, true);
            let examples: Vec<Example> = (0..3).map(|_| task.sample_test(&mut rng)).collect();
            let outputs: Vec<Vec<u32>> = examples.iter().map(|e| e.target().to_vec()).collect();
            let r = score(task.as_ref(), &examples, &outputs, &outputs, None, 0);
            assert_eq!(r.path_star.is_some(), name == "path-star", "{name}");
        }
    }
}

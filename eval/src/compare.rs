//! `eval compare DIR`: runs aggregated into a table of mean ± sd over seeds, grouped as asked,
//! in Markdown (for people and LOG.md) and CSV (for plotting elsewhere).
//!
//! DIR is a sweep directory (its `manifest.json` names the runs and their groups) or any
//! directory of run directories (a run `<group>-s<seed>` belongs to `<group>`). Only finished
//! runs count: those whose `eval.json` holds the evaluation of their last step. Beside its
//! evaluation, a run contributes its last logged `train/` metrics and, where `analysis plan`
//! analysed its last step, `plan/decision` (I(h_t; arm | graph) at the decision).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::files::EvalFile;
use lab_core::run_dir::RunDir;
use lab_core::sweep::{Manifest, SWEEP_MANIFEST, finished};

/// The metrics shown when none are asked for (those that no run has are left out).
pub const DEFAULT_METRICS: [&str; 15] = [
    "eval/free/exact",
    "eval/free/exact_ci95",
    "eval/free/valid",
    "eval/path_star/decision",
    "eval/path_star/clever_hans",
    "plan/decision",
    "eval/diversity/creativity",
    "eval/diversity/diversity",
    "eval/diversity/memorized",
    "eval/pass_at_k/1",
    "eval/pass_at_k/8",
    "eval/pass_at_k/64",
    "train/sequences",
    "cost/s_per_1k_seq",
    "cost/gflops_per_seq",
];

/// Half the width of the Wilson score interval at 95% for `k` successes in `n` trials: the
/// uncertainty of one run's accuracy from the number of examples it scored (at n = 1,000 and
/// an accuracy of 1/2, 0.031; at 20,000, 0.007).
pub fn wilson_half_width(accuracy: f64, n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let (n, z) = (n as f64, 1.959_963_984_540_054);
    let z2 = z * z;
    z / (1.0 + z2 / n) * (accuracy * (1.0 - accuracy) / n + z2 / (4.0 * n * n)).sqrt()
}

/// One finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Its directory name.
    pub name: String,
    /// Its group from the manifest or its name.
    pub group: String,
    /// Its seed, when known.
    pub seed: Option<u64>,
    /// Its resolved config (`config.toml`).
    pub config: toml::Table,
    /// Its final evaluation's metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// The runs of a directory: `(finished, unfinished names)`.
pub fn collect(dir: &Path) -> Result<(Vec<RunResult>, Vec<String>)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let listed: Vec<(String, String, Option<u64>)> = if dir.join(SWEEP_MANIFEST).is_file() {
        Manifest::read(dir)?.runs.into_iter().map(|r| (r.name, r.group, Some(r.seed))).collect()
    } else {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| RunDir(&e.path()).is_run())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let (group, seed) = split_seed(&n);
                (n.clone(), group, seed)
            })
            .collect()
    };
    if listed.is_empty() {
        bail!("{} holds no runs (no manifest.json, no run directories with a config.toml)", dir.display());
    }
    let mut done = Vec::new();
    let mut unfinished = Vec::new();
    for (name, group, seed) in listed {
        let run = dir.join(&name);
        match read_run(&run)? {
            Some((config, metrics)) => done.push(RunResult { name, group, seed, config, metrics }),
            None => unfinished.push(name),
        }
    }
    Ok((done, unfinished))
}

/// `name-s3` → (`name`, 3).
fn split_seed(name: &str) -> (String, Option<u64>) {
    match name.rsplit_once("-s") {
        Some((group, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => {
            (group.to_string(), seed.parse().ok())
        }
        _ => (name.to_string(), None),
    }
}

/// A finished run's resolved config and final metrics; `None` while it is unfinished.
fn read_run(run: &Path) -> Result<Option<(toml::Table, BTreeMap<String, f64>)>> {
    let path = RunDir(run).config();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let config: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let steps = config.get("schedule").and_then(|s| s.get("steps")).and_then(|s| s.as_integer()).unwrap_or(0) as u64;
    // A live run is finished when its last checkpoint is written. A run copied out of its sweep
    // without checkpoints (scripts/export-results.sh) is finished when its eval.json is of the
    // last step, checked below.
    let exported = !RunDir(run).checkpoints().exists();
    if !exported && !finished(run, steps) {
        return Ok(None);
    }
    let path = RunDir(run).eval();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let file: EvalFile =
        serde_json::from_str(&text).with_context(|| format!("{} is not a lab eval.json", path.display()))?;
    if file.step != steps {
        return Ok(None);
    }
    let mut metrics: BTreeMap<String, f64> = file.report.metrics().into_iter().collect();
    // Each run's own uncertainty from the examples it scored (reports from before `scored` was
    // recorded scored `report.examples`, the same number).
    let scored = file.scored.as_ref().map_or(file.report.examples, |s| s.examples);
    metrics.insert("eval/examples".into(), scored as f64);
    if let Some(&exact) = metrics.get("eval/free/exact") {
        metrics.insert("eval/free/exact_ci95".into(), wilson_half_width(exact, scored));
    }
    metrics.extend(final_train_metrics(run)?);
    // What the training steps cost, where the run recorded it (runs from before 2026-12-07 did not).
    if let Some(cost) = lab_core::run_dir::Cost::read(run)? {
        if let Some(s) = cost.seconds_per_1k() {
            metrics.insert("cost/s_per_1k_seq".into(), s);
        }
        if let Some(f) = cost.flops_per_sequence() {
            metrics.insert("cost/gflops_per_seq".into(), f / 1e9);
        }
    }
    if let Some((name, value)) = plan_mi(run, steps)? {
        metrics.insert(name, value);
    }
    Ok(Some((config, metrics)))
}

/// The last logged value of every `train/` metric in the run's `metrics.jsonl` (each is already
/// the mean over its logging window): what the objective's own statistics ended at, e.g.
/// `train/decision_reward_arm` or `train/mi_bound`.
fn final_train_metrics(run: &Path) -> Result<BTreeMap<String, f64>> {
    let path = RunDir(run).metrics();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(BTreeMap::new()) };
    let mut last = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        // A line cut short (a run killed while writing) costs that line, not the table.
        let Ok(row) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(line) else {
            eprintln!("warning: {} line {}: not a JSON object; skipped", path.display(), i + 1);
            continue;
        };
        for (k, v) in row.into_iter().filter(|(k, _)| k.starts_with("train/")) {
            // serde_json writes a non-finite value as null: it was the last value, so it shows.
            last.insert(k, v.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(last)
}

/// `analysis plan RUN`'s bound at the decision (`mi_plan.json`), if it analysed the
/// run's last step: `plan/decision` for the default protocol (the decision token, an MLP critic),
/// else `plan/decision.<answer>-<critic>`, so that bounds of different protocols never share a
/// column.
fn plan_mi(run: &Path, steps: u64) -> Result<Option<(String, f64)>> {
    let path = RunDir(run).mi_plan();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not a lab mi_plan.json", path.display()))?;
    let (Some(step), Some(decision)) = (v["step"].as_u64(), v.get("decision")) else {
        bail!("{} is not a lab mi_plan.json (no step or decision)", path.display());
    };
    // A NaN bound (no decision position measured) is written as null.
    let decision = decision.as_f64().unwrap_or(f64::NAN);
    if step != steps {
        return Ok(None);
    }
    // Files written before the options existed matched the inner nodes with a bilinear critic.
    let answer = v["options"]["answer"].as_str().unwrap_or("inner");
    let critic = v["options"]["critic"].as_str().unwrap_or("bilinear");
    let name = match (answer, critic) {
        ("decision", "mlp") => "plan/decision".to_string(),
        _ => format!("plan/decision.{answer}-{critic}"),
    };
    Ok(Some((name, decision)))
}

/// A dotted key's value in a config, as text (`objective.kind` → `mi`).
fn lookup(config: &toml::Table, key: &str) -> Option<String> {
    let mut node = config.get(key.split('.').next()?)?;
    for part in key.split('.').skip(1) {
        node = node.get(part)?;
    }
    Some(match node {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Mean and sample standard deviation (`None` for one value).
pub fn mean_sd(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// The aggregated table.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Grouping columns (`group`, or the config keys asked for).
    pub by: Vec<String>,
    /// Metric columns.
    pub metrics: Vec<String>,
    /// One row per group, in order of first appearance.
    pub rows: Vec<Row>,
    /// Runs not finished (left out).
    pub unfinished: Vec<String>,
}

/// One group's row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The group's values of the grouping columns.
    pub key: Vec<String>,
    /// Runs in the group.
    pub runs: usize,
    /// Their seeds.
    pub seeds: Vec<u64>,
    /// Per metric: mean and sd over the runs that have it, and how many do (for a run's interval,
    /// `*_ci95`, the widest of them and no sd).
    pub values: Vec<Option<(f64, Option<f64>, usize)>>,
}

/// Aggregates `runs` grouped by `by` (config keys; empty: the run's group) over `metrics`
/// (empty: [`DEFAULT_METRICS`] present in some run). Metric names may leave out `eval/`.
pub fn aggregate(runs: &[RunResult], by: &[String], metrics: &[String], unfinished: Vec<String>) -> Result<Table> {
    let metrics: Vec<String> = if metrics.is_empty() {
        DEFAULT_METRICS
            .iter()
            .filter(|m| runs.iter().any(|r| r.metrics.contains_key(**m)))
            .map(|m| m.to_string())
            .collect()
    } else {
        let mut out = Vec::new();
        for m in metrics {
            let full = if ["eval/", "train/", "plan/", "cost/"].iter().any(|p| m.starts_with(p)) {
                m.clone()
            } else {
                format!("eval/{m}")
            };
            if !runs.iter().any(|r| r.metrics.contains_key(&full)) {
                let known: std::collections::BTreeSet<&String> = runs.iter().flat_map(|r| r.metrics.keys()).collect();
                let known: Vec<&str> = known.into_iter().map(|s| s.as_str()).collect();
                bail!("no run has the metric {full}; known metrics: {}", known.join(", "));
            }
            out.push(full);
        }
        out
    };
    for key in by {
        if !runs.iter().any(|r| lookup(&r.config, key).is_some()) {
            bail!("no run's config has the key {key} (group by keys of config.toml, e.g. objective.kind)");
        }
    }
    let by_cols: Vec<String> = if by.is_empty() { vec!["group".into()] } else { by.to_vec() };
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut groups: BTreeMap<Vec<String>, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        let key = if by.is_empty() {
            vec![r.group.clone()]
        } else {
            by.iter().map(|k| lookup(&r.config, k).unwrap_or_else(|| "-".into())).collect()
        };
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    let rows = order
        .into_iter()
        .map(|key| {
            let members = &groups[&key];
            let mut seeds: Vec<u64> = members.iter().filter_map(|r| r.seed).collect();
            seeds.sort_unstable();
            let values = metrics
                .iter()
                .map(|m| {
                    let xs: Vec<f64> = members.iter().filter_map(|r| r.metrics.get(m).copied()).collect();
                    (!xs.is_empty()).then(|| {
                        if m.ends_with("_ci95") {
                            // Runs' own intervals are not averaged: the widest stands for all.
                            return (xs.iter().copied().fold(f64::NAN, f64::max), None, xs.len());
                        }
                        let (mean, sd) = mean_sd(&xs);
                        (mean, sd, xs.len())
                    })
                })
                .collect();
            Row { key, runs: members.len(), seeds, values }
        })
        .collect();
    Ok(Table { by: by_cols, metrics, rows, unfinished })
}

impl Table {
    /// Markdown: `mean ± sd` per cell (`mean` alone for a single run, `-` where no run has it).
    pub fn markdown(&self) -> String {
        let short = |m: &str| m.strip_prefix("eval/").unwrap_or(m).to_string();
        let mut out = String::new();
        let head: Vec<String> = self
            .by
            .iter()
            .cloned()
            .chain(["runs".into(), "seeds".into()])
            .chain(self.metrics.iter().map(|m| short(m)))
            .collect();
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        for r in &self.rows {
            let seeds = r.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let cells: Vec<String> = r
                .key
                .iter()
                .cloned()
                .chain([r.runs.to_string(), if seeds.is_empty() { "-".into() } else { seeds }])
                .chain(r.values.iter().zip(&self.metrics).map(|(v, m)| match v {
                    None => "-".into(),
                    // A run's interval: the widest of the group's (they scored as many examples).
                    Some((widest, _, _)) if m.ends_with("_ci95") => format!("±{widest:.3}"),
                    Some((mean, _, _)) if m == "train/sequences" => format!("{:.0}k", mean / 1e3),
                    Some((mean, None, _)) => format!("{mean:.3}"),
                    Some((mean, Some(sd), _)) => format!("{mean:.3} ± {sd:.3}"),
                }))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        if !self.unfinished.is_empty() {
            let _ =
                writeln!(out, "\n{} unfinished run(s) left out: {}", self.unfinished.len(), self.unfinished.join(", "));
        }
        out
    }

    /// CSV: one row per group; `<metric>_mean`, `<metric>_sd` and `<metric>_n` per metric.
    pub fn csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
        };
        let mut out = String::new();
        let mut head: Vec<String> = self.by.iter().map(|b| quote(b)).collect();
        head.extend(["runs".into(), "seeds".into()]);
        for m in &self.metrics {
            head.extend([format!("{m}_mean"), format!("{m}_sd"), format!("{m}_n")]);
        }
        let _ = writeln!(out, "{}", head.join(","));
        for r in &self.rows {
            let mut cells: Vec<String> = r.key.iter().map(|k| quote(k)).collect();
            cells.push(r.runs.to_string());
            cells.push(r.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
            for v in &r.values {
                match v {
                    None => cells.extend(["".into(), "".into(), "0".into()]),
                    Some((mean, sd, n)) => {
                        cells.extend([mean.to_string(), sd.map_or(String::new(), |s| s.to_string()), n.to_string()])
                    }
                }
            }
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

/// Aggregates DIR and writes `compare.md` and `compare.csv` into it; returns the table.
pub fn compare(dir: &Path, by: &[String], metrics: &[String]) -> Result<(Table, PathBuf, PathBuf)> {
    let (runs, unfinished) = collect(dir)?;
    if runs.is_empty() {
        bail!("{} has no finished run yet ({} unfinished)", dir.display(), unfinished.len());
    }
    let table = aggregate(&runs, by, metrics, unfinished)?;
    let (md, csv) = (dir.join("compare.md"), dir.join("compare.csv"));
    lab_core::run_dir::write_atomic(&md, table.markdown().as_bytes())?;
    lab_core::run_dir::write_atomic(&csv, table.csv().as_bytes())?;
    Ok((table, md, csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_interval_shrinks_with_the_examples_it_scored() {
        assert!((wilson_half_width(0.5, 1000) - 0.0309).abs() < 1e-4);
        assert!((wilson_half_width(0.5, 20_000) - 0.00693).abs() < 1e-5);
        // At the edges the interval stays open (a Wald interval would be 0 at 1.0).
        assert!(wilson_half_width(1.0, 20_000) > 0.0);
        assert!(wilson_half_width(0.5, 0).is_nan());
    }

    fn run(name: &str, kind: &str, nodes: i64, metrics: &[(&str, f64)]) -> RunResult {
        let (group, seed) = split_seed(name);
        let config: toml::Table =
            toml::from_str(&format!("[objective]\nkind = \"{kind}\"\n[task]\nnodes = {nodes}\n")).unwrap();
        RunResult {
            name: name.into(),
            group,
            seed,
            config,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn means_and_standard_deviations_by_hand() {
        let runs = vec![
            run("ntp-s0", "ntp", 10, &[("eval/free/exact", 0.5), ("eval/pass_at_k/1", 0.25)]),
            run("ntp-s1", "ntp", 10, &[("eval/free/exact", 0.7), ("eval/pass_at_k/1", 0.25)]),
            run("ntp-s2", "ntp", 20, &[("eval/free/exact", 0.9)]),
            run("mi-s0", "mi", 10, &[("eval/free/exact", 0.2)]),
        ];
        let t = aggregate(&runs, &[], &[], vec!["mi-s1".into()]).unwrap();
        assert_eq!(t.metrics, ["eval/free/exact", "eval/pass_at_k/1"]);
        assert_eq!(t.rows.len(), 2);
        let ntp = &t.rows[0];
        assert_eq!((ntp.key.clone(), ntp.runs, ntp.seeds.clone()), (vec!["ntp".to_string()], 3, vec![0, 1, 2]));
        // Mean 0.7; sample sd sqrt(((-0.2)² + 0² + 0.2²) / 2) = 0.2.
        let (mean, sd, n) = ntp.values[0].unwrap();
        assert!((mean - 0.7).abs() < 1e-12 && (sd.unwrap() - 0.2).abs() < 1e-12 && n == 3);
        // Two of three runs have pass@1: mean 0.25, sd 0.
        assert_eq!(ntp.values[1], Some((0.25, Some(0.0), 2)));
        // One run: no sd; a metric no run of the group has: empty.
        assert_eq!(t.rows[1].values, vec![Some((0.2, None, 1)), None]);
        let md = t.markdown();
        assert!(md.contains("| group | runs | seeds | free/exact | pass_at_k/1 |"), "{md}");
        assert!(md.contains("| ntp | 3 | 0,1,2 | 0.700 ± 0.200 | 0.250 ± 0.000 |"), "{md}");
        assert!(md.contains("| mi | 1 | 0 | 0.200 | - |") && md.contains("left out: mi-s1"), "{md}");
        let csv = t.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "group,runs,seeds,eval/free/exact_mean,eval/free/exact_sd,eval/free/exact_n,eval/pass_at_k/1_mean,eval/pass_at_k/1_sd,eval/pass_at_k/1_n"
        );
        assert!(lines[2].starts_with("mi,1,0,0.2,,1,,,0"), "{}", lines[2]);

        // Grouped by config keys instead.
        let t =
            aggregate(&runs, &["objective.kind".into(), "task.nodes".into()], &["free/exact".into()], vec![]).unwrap();
        let keys: Vec<Vec<String>> = t.rows.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, [vec!["ntp", "10"], vec!["ntp", "20"], vec!["mi", "10"]]);
        assert_eq!(t.rows[0].values[0].unwrap().0, 0.6);
    }

    #[test]
    fn a_run_contributes_its_last_train_metrics_and_the_plan_bound_of_its_last_step() {
        let dir = std::env::temp_dir().join(format!("lab-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"step\":50,\"train/loss\":2.0,\"train/mi_bound\":0.1}\n\
             {\"step\":100,\"eval/free/exact\":0.5}\n\
             {\"step\":100,\"train/loss\":1.5}\n",
        )
        .unwrap();
        let train = final_train_metrics(&dir).unwrap();
        assert_eq!(train.get("train/loss"), Some(&1.5), "the last logged value");
        assert_eq!(train.get("train/mi_bound"), Some(&0.1));
        assert!(!train.contains_key("eval/free/exact"));
        let plan = |step: u64, answer: &str| {
            std::fs::write(
                dir.join("mi_plan.json"),
                format!(
                    "{{\"step\":{step},\"decision\":0.6,\"options\":{{\"answer\":\"{answer}\",\"critic\":\"mlp\"}}}}"
                ),
            )
            .unwrap();
            plan_mi(&dir, 100).unwrap()
        };
        assert_eq!(plan(100, "decision"), Some(("plan/decision".to_string(), 0.6)));
        assert_eq!(plan(100, "inner"), Some(("plan/decision.inner-mlp".to_string(), 0.6)));
        assert_eq!(plan(50, "decision"), None, "an analysis of an earlier checkpoint does not count");
        // Before the options existed: the inner nodes, a bilinear critic.
        std::fs::write(dir.join("mi_plan.json"), "{\"step\":100,\"decision\":0.1,\"options\":{}}").unwrap();
        assert_eq!(plan_mi(&dir, 100).unwrap(), Some(("plan/decision.inner-bilinear".to_string(), 0.1)));
        std::fs::write(dir.join("mi_plan.json"), "{}").unwrap();
        assert!(plan_mi(&dir, 100).unwrap_err().to_string().contains("not a lab mi_plan.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_exported_run_counts_by_its_eval_json_and_a_live_one_by_its_last_checkpoint() {
        let dir = std::env::temp_dir().join(format!("lab-compare-export-{}", std::process::id()));
        let run = dir.join("ntp-s0");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.toml"), "[schedule]\nsteps = 100\n").unwrap();
        let eval = |step: u64| {
            let scores = "{\"exact\":0.5,\"per_position\":[1.0,0.5]}";
            format!(
                "{{\"step\":{step},\"examples\":10,\"forced\":{scores},\"free\":{scores},\"free_valid\":0.5,\
                 \"teacherless\":null,\"path_star\":null,\"failures\":[]}}"
            )
        };
        std::fs::write(run.join("eval.json"), eval(50)).unwrap();
        assert!(read_run(&run).unwrap().is_none(), "an evaluation of an earlier step");
        std::fs::write(run.join("eval.json"), eval(100)).unwrap();
        let (_, metrics) = read_run(&run).unwrap().expect("exported and evaluated at its last step");
        assert_eq!(metrics.get("eval/free/exact"), Some(&0.5));
        // With checkpoints it is a live run: finished only once its last checkpoint exists.
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        assert!(read_run(&run).unwrap().is_none(), "a live run without its last checkpoint");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_metrics_are_clear_errors() {
        let runs = vec![run("ntp-s0", "ntp", 10, &[("eval/free/exact", 0.5)])];
        let e = aggregate(&runs, &["objective.kindd".into()], &[], vec![]).unwrap_err().to_string();
        assert!(e.contains("objective.kindd"), "{e}");
        let e = aggregate(&runs, &[], &["free/exactt".into()], vec![]).unwrap_err().to_string();
        assert!(e.contains("eval/free/exactt") && e.contains("known metrics: eval/free/exact"), "{e}");
        assert_eq!(split_seed("a-b-s12"), ("a-b".into(), Some(12)));
        assert_eq!(split_seed("reverse-lm"), ("reverse-lm".into(), None));
    }
}

//! Sweeps: a grid of runs (configs × grid axes × seeds) expanded from one TOML file, executed by
//! a local pool of trainer processes or exported as a Slurm job array.
//!
//! ```toml
//! # configs/sweeps/example.toml
//! seeds = [0, 1, 2]                 # each run once per seed (seeds.model = seeds.data = seed,
//!                                   # and data.seed = seed: every seed its own split)
//! # fixed_data = true               # keep the config's data.seed: seeds vary the model only
//!
//! [set]                             # overrides for every run
//! "schedule.steps" = 1500
//!
//! [grid]                            # axes crossed with every entry of [[runs]]
//! "task.nodes" = [10, 20]
//!
//! [[runs]]
//! config = "configs/path-star/ntp.toml"
//!
//! [[runs]]
//! config = "configs/path-star/fsp-summary-frozen.toml"
//! name = "frozen"                   # default: the config's file stem
//! set = { "objective.reverse_run" = "{sweep}/reverse-lm-s0" }
//! ```
//!
//! A run is named `<name>[-<axis><value>...]-s<seed>` and trains in `<sweep dir>/<run name>`.
//! `{sweep}` in a string value is the sweep directory; a value that names another run of the
//! sweep that way makes this run wait for it (in the local pool, and as a later Slurm phase).
//! Every run's config is resolved before anything starts, so an unknown key or a bad value is an
//! error that names the run, not a failure an hour in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result, bail};
use lab_core::run_dir::{RunDir, final_metrics};
use lab_core::sweep::{MANIFEST_VERSION, Manifest, ManifestRun, RunStatus, finished, started};
use serde::Deserialize;

use crate::RunConfig;

/// The sweep file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The sweep's name [default: the file stem]; the default directory is `runs/sweeps/<name>`.
    pub name: Option<String>,
    /// Seeds every run is repeated with: `seeds.model`, `seeds.data` and, unless `fixed_data`,
    /// `data.seed` (the generated split), so that the spread over seeds includes the spread
    /// over data sets.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Keep every run's `[data] seed` as its config has it: the seeds then vary the
    /// initialisation and the order of the examples, not the examples themselves.
    #[serde(default)]
    pub fixed_data: bool,
    /// Overrides applied to every run, before the grid's and the run's own.
    #[serde(default)]
    pub set: toml::Table,
    /// Axes: a dotted config key and the values it takes; every combination is a run.
    #[serde(default)]
    pub grid: toml::Table,
    /// The runs: a config file each, crossed with the grid and the seeds.
    pub runs: Vec<RunEntry>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// One `[[runs]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEntry {
    /// The config file (relative to the working directory).
    pub config: PathBuf,
    /// The run's name [default: the config's file stem].
    pub name: Option<String>,
    /// Overrides for this entry only, applied last.
    #[serde(default)]
    pub set: toml::Table,
    /// Seeds for this entry instead of the sweep's (e.g. one reverse LM that all seeds read).
    pub seeds: Option<Vec<u64>>,
    /// Whether the grid applies to this entry (false: it runs once per seed, unvaried).
    #[serde(default = "yes")]
    pub grid: bool,
}

fn yes() -> bool {
    true
}

/// One expanded run.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    /// Name and directory inside the sweep directory.
    pub name: String,
    /// Name without the seed.
    pub group: String,
    /// Its seed.
    pub seed: u64,
    /// The config file.
    pub config: PathBuf,
    /// `key=value` overrides, in order (sweep, grid, entry, seeds).
    pub overrides: Vec<String>,
    /// Runs of the sweep it reads, by name.
    pub after: Vec<String>,
    /// Steps it trains for (from its resolved config).
    pub steps: u64,
}

/// A sweep expanded into runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sweep's name.
    pub name: String,
    /// The sweep file, as given.
    pub file: PathBuf,
    /// The sweep directory.
    pub dir: PathBuf,
    /// The runs, in expansion order (entries, then grid combinations, then seeds).
    pub runs: Vec<PlannedRun>,
    /// Arguments every trainer invocation of the sweep gets (e.g. `--device wgpu`).
    pub trainer_args: Vec<String>,
}

/// Flattens nested tables into dotted keys: `{schedule = {steps = 3}}` → `schedule.steps = 3`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// A value as it goes on a `--set` line (TOML syntax: strings quoted).
fn toml_value(v: &toml::Value) -> String {
    v.to_string()
}

/// `{sweep}` replaced by the sweep directory inside string values (before the value is written
/// as TOML, so that the directory's characters are escaped like any string's).
fn substitute(v: &toml::Value, sweep_dir: &str) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(s.replace("{sweep}", sweep_dir)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| substitute(x, sweep_dir)).collect()),
        other => other.clone(),
    }
}

/// A sweep's or run's name becomes a directory: it must stay one directory inside the sweep's
/// (no `/`, no `..`, nothing hidden), so only `[A-Za-z0-9._-]`, not starting with a dot.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        bail!(
            "{what} name {name:?}: a name becomes a directory, so it may hold only letters, digits, `.`, `_` and `-`, and not start with `.`"
        );
    }
    Ok(())
}

/// A value as it goes into a run name: bare, with anything but `[A-Za-z0-9._]` replaced.
fn name_value(v: &toml::Value) -> String {
    let raw = match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' }).collect()
}

impl Plan {
    /// Reads and expands a sweep file; `dir` overrides the sweep directory. Every run's config
    /// is resolved here, so that a bad key fails before any run starts.
    pub fn load(file: &Path, dir: Option<&Path>) -> Result<Plan> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let sweep: SweepFile =
            toml::from_str(&text).with_context(|| format!("{} is not a sweep file", file.display()))?;
        let name = match &sweep.name {
            Some(n) => n.clone(),
            None => file.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep").to_string(),
        };
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| Path::new("runs/sweeps").join(&name));
        Plan::expand(name, file, dir, &sweep)
    }

    fn expand(name: String, file: &Path, dir: PathBuf, sweep: &SweepFile) -> Result<Plan> {
        check_name("sweep", &name)?;
        if sweep.runs.is_empty() {
            bail!("{}: a sweep needs at least one [[runs]] entry", file.display());
        }
        let mut common = Vec::new();
        flatten("", &sweep.set, &mut common);
        let mut axes = Vec::new();
        flatten("", &sweep.grid, &mut axes);
        let axes: Vec<(String, Vec<toml::Value>)> = axes
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::Array(values) if !values.is_empty() => Ok((k, values)),
                _ => bail!("grid axis {k} must be a non-empty list of values"),
            })
            .collect::<Result<_>>()?;
        for key in common.iter().map(|(k, _)| k).chain(axes.iter().map(|(k, _)| k)) {
            if key.starts_with("seeds.") {
                bail!("{key}: seeds come from the sweep's `seeds` list, not from set or grid");
            }
        }
        if !sweep.fixed_data {
            let mut own = Vec::new();
            for entry in &sweep.runs {
                flatten("", &entry.set, &mut own);
            }
            let keys =
                common.iter().map(|(k, _)| k).chain(axes.iter().map(|(k, _)| k)).chain(own.iter().map(|(k, _)| k));
            if keys.into_iter().any(|k| k == "data.seed") {
                bail!(
                    "data.seed: the sweep's `seeds` list sets it (every seed its own split); add `fixed_data = true` to the sweep to set it yourself"
                );
            }
        }
        // Every combination of axis values, in order (the last axis varies fastest).
        let mut combos: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
        for (key, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let sweep_dir = dir.to_string_lossy().to_string();
        let mut runs = Vec::new();
        for entry in &sweep.runs {
            let base = match &entry.name {
                Some(n) => n.clone(),
                None => entry.config.file_stem().and_then(|s| s.to_str()).unwrap_or("run").to_string(),
            };
            let mut own = Vec::new();
            flatten("", &entry.set, &mut own);
            let entry_combos = if entry.grid { combos.clone() } else { vec![vec![]] };
            for combo in &entry_combos {
                let mut group = base.clone();
                for (key, value) in combo {
                    let axis = key.rsplit('.').next().unwrap_or(key);
                    let _ = write!(group, "-{axis}{}", name_value(value));
                }
                for &seed in entry.seeds.as_ref().unwrap_or(&sweep.seeds) {
                    let mut overrides: Vec<String> = common
                        .iter()
                        .chain(combo)
                        .chain(&own)
                        .map(|(k, v)| format!("{k}={}", toml_value(&substitute(v, &sweep_dir))))
                        .collect();
                    overrides.push(format!("seeds.model={seed}"));
                    overrides.push(format!("seeds.data={seed}"));
                    if !sweep.fixed_data {
                        overrides.push(format!("data.seed={seed}"));
                    }
                    let after = common
                        .iter()
                        .chain(combo)
                        .chain(&own)
                        .filter_map(|(_, v)| {
                            v.as_str()?.strip_prefix("{sweep}/").map(|r| r.split('/').next().unwrap_or(r).to_string())
                        })
                        .collect();
                    runs.push(PlannedRun {
                        name: format!("{group}-s{seed}"),
                        group: group.clone(),
                        seed,
                        config: entry.config.clone(),
                        overrides,
                        after,
                        steps: 0,
                    });
                }
            }
        }
        let mut seen = BTreeSet::new();
        for r in &runs {
            check_name("run", &r.name)?;
            if !seen.insert(r.name.clone()) {
                bail!("two runs are named {}: give the [[runs]] entries distinct `name`s", r.name);
            }
        }
        for r in &mut runs {
            for a in &r.after {
                if !seen.contains(a) {
                    bail!("run {} reads {{sweep}}/{a}, which this sweep does not define", r.name);
                }
            }
            let config = RunConfig::load(&r.config, &r.overrides).with_context(|| {
                format!("sweep run {} (config {}, --set {})", r.name, r.config.display(), r.overrides.join(" --set "))
            })?;
            config.task.build().with_context(|| format!("sweep run {}", r.name))?;
            r.steps = config.schedule.steps;
        }
        let plan = Plan { name, file: file.to_path_buf(), dir, runs, trainer_args: Vec::new() };
        plan.phases()?; // rejects cycles
        Ok(plan)
    }

    /// Runs grouped into phases: a run's phase is one more than the latest phase of the runs it
    /// reads. Runs of one phase are independent of each other.
    pub fn phases(&self) -> Result<Vec<Vec<usize>>> {
        let index: HashMap<&str, usize> = self.runs.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
        let mut phase: Vec<Option<usize>> = vec![None; self.runs.len()];
        for _ in 0..=self.runs.len() {
            let mut changed = false;
            for (i, r) in self.runs.iter().enumerate() {
                if phase[i].is_some() {
                    continue;
                }
                let deps: Option<Vec<usize>> = r.after.iter().map(|a| phase[index[a.as_str()]]).collect();
                if let Some(deps) = deps {
                    phase[i] = Some(deps.into_iter().max().map_or(0, |p| p + 1));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if let Some(i) = phase.iter().position(Option::is_none) {
            bail!("run {} is part of a cycle of runs that read each other", self.runs[i].name);
        }
        let mut phases = vec![Vec::new(); phase.iter().flatten().max().map_or(0, |p| p + 1)];
        for (i, p) in phase.into_iter().enumerate() {
            phases[p.expect("checked above")].push(i);
        }
        Ok(phases)
    }

    /// The status of each run from its directory.
    fn status_of(&self, run: &PlannedRun) -> RunStatus {
        let dir = self.dir.join(&run.name);
        if finished(&dir, run.steps) {
            RunStatus::Done
        } else if started(&dir) {
            RunStatus::Started
        } else {
            RunStatus::Pending
        }
    }

    /// The manifest as the run directories stand now (`failed` keeps failures recorded by the
    /// local pool, which a directory does not show).
    pub fn manifest(&self, failed: &BTreeMap<String, RunStatus>) -> Manifest {
        let runs = self
            .runs
            .iter()
            .map(|r| {
                let mut status = self.status_of(r);
                if status != RunStatus::Done {
                    status = failed.get(&r.name).copied().unwrap_or(status);
                }
                let result = if status == RunStatus::Done {
                    final_metrics(&self.dir.join(&r.name), r.steps).unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                ManifestRun {
                    name: r.name.clone(),
                    group: r.group.clone(),
                    seed: r.seed,
                    config: r.config.display().to_string(),
                    overrides: r.overrides.clone(),
                    after: r.after.clone(),
                    steps: r.steps,
                    status,
                    result,
                }
            })
            .collect();
        Manifest {
            version: MANIFEST_VERSION,
            name: self.name.clone(),
            sweep_file: self.file.display().to_string(),
            runs,
        }
    }

    /// A run directory that already exists must hold the run this sweep plans: resuming (or
    /// counting as done) a run trained under another config, say another `data.seed` from
    /// before the seed list set it, would put its numbers in the wrong row. `schedule.*` and
    /// `optimizer.*` may differ (a resume may change them), and `model.*` keys the plan leaves
    /// to the preset are filled in the run's resolved copy.
    fn check_trained_as_planned(&self, run: &PlannedRun) -> Result<()> {
        let dir = self.dir.join(&run.name);
        let saved = RunDir(&dir).config();
        if !saved.exists() {
            return Ok(());
        }
        let table = |config: RunConfig| -> Result<BTreeMap<String, toml::Value>> {
            let value = toml::Value::try_from(&config).context("serialising a config")?;
            let mut flat = Vec::new();
            if let toml::Value::Table(t) = value {
                flatten("", &t, &mut flat);
            }
            Ok(flat.into_iter().collect())
        };
        let planned = table(RunConfig::load(&run.config, &run.overrides)?)?;
        let trained = table(RunConfig::load(&saved, &[])?)?;
        let keys: BTreeSet<&String> = planned.keys().chain(trained.keys()).collect();
        for key in keys {
            if key.starts_with("schedule.") || key.starts_with("optimizer.") {
                continue;
            }
            let (p, t) = (planned.get(key), trained.get(key));
            if p == t || (p.is_none() && key.starts_with("model.")) {
                continue;
            }
            let show = |v: Option<&toml::Value>| v.map_or("nothing".to_string(), toml::Value::to_string);
            bail!(
                "{} was trained with {key} = {}, but the sweep now plans {}: move that directory away (or give the sweep another directory with --out) before resuming",
                dir.display(),
                show(t),
                show(p)
            );
        }
        Ok(())
    }

    /// The trainer arguments that (re)start a run: `train --resume` when it has a checkpoint,
    /// else `train --config ... --out ...`.
    fn train_args(&self, run: &PlannedRun) -> Vec<String> {
        let dir = self.dir.join(&run.name).display().to_string();
        let mut args: Vec<String> = if started(&self.dir.join(&run.name)) {
            vec!["train".into(), "--resume".into(), dir, "--quiet".into()]
        } else {
            let mut args = vec!["train".into(), "--config".into(), run.config.display().to_string()];
            for o in &run.overrides {
                args.push("--set".into());
                args.push(o.clone());
            }
            args.extend(["--out".into(), dir, "--quiet".into()]);
            args
        };
        args.extend(self.trainer_args.iter().cloned());
        args
    }

    /// Creates the sweep directory and writes its manifest and a copy of the sweep file;
    /// returns the manifest written.
    pub fn prepare(&self, failed: &BTreeMap<String, RunStatus>) -> Result<Manifest> {
        for run in &self.runs {
            self.check_trained_as_planned(run)?;
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::copy(&self.file, self.dir.join("sweep.toml"))
            .with_context(|| format!("copying {} into {}", self.file.display(), self.dir.display()))?;
        let manifest = self.manifest(failed);
        manifest.write(&self.dir)?;
        Ok(manifest)
    }

    /// Runs every unfinished run with `jobs` trainer processes at a time (`trainer` is the
    /// binary), runs that read other runs after those are done. Finished runs are skipped,
    /// interrupted ones resumed. Returns the final manifest.
    pub fn execute(&self, trainer: &Path, jobs: usize, report: impl Fn(&str) + Sync) -> Result<Manifest> {
        let failed = BTreeMap::new();
        // The manifest written first holds every run's status as its directory stands.
        let initial: Vec<RunStatus> = self.prepare(&failed)?.runs.iter().map(|r| r.status).collect();
        let n = self.runs.len();
        let index: HashMap<&str, usize> = self.runs.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
        let done = initial.iter().filter(|s| **s == RunStatus::Done).count();
        report(&format!("sweep {}: {n} runs, {done} already done, {} to run, {jobs} at a time", self.name, n - done));
        struct State {
            status: Vec<RunStatus>,
            running: Vec<bool>,
            failed: BTreeMap<String, RunStatus>,
        }
        let state = Arc::new((Mutex::new(State { status: initial, running: vec![false; n], failed }), Condvar::new()));
        let next = |s: &mut State| -> Option<Option<usize>> {
            // Some(Some(i)): run i; Some(None): wait; None: nothing left to do.
            loop {
                let mut changed = false;
                for i in 0..n {
                    if matches!(s.status[i], RunStatus::Pending | RunStatus::Started) && !s.running[i] {
                        let dep_failed = self.runs[i]
                            .after
                            .iter()
                            .any(|a| matches!(s.status[index[a.as_str()]], RunStatus::Failed | RunStatus::Skipped));
                        if dep_failed {
                            s.status[i] = RunStatus::Skipped;
                            s.failed.insert(self.runs[i].name.clone(), RunStatus::Skipped);
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            let ready = (0..n).find(|&i| {
                matches!(s.status[i], RunStatus::Pending | RunStatus::Started)
                    && !s.running[i]
                    && self.runs[i].after.iter().all(|a| s.status[index[a.as_str()]] == RunStatus::Done)
            });
            match ready {
                Some(i) => Some(Some(i)),
                None if s.running.iter().any(|&r| r) => Some(None),
                None => None,
            }
        };
        let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let jobs = jobs.clamp(1, n.max(1));
        // The cores are shared among the runs (`kernels::par`; results do not depend on it).
        let threads = std::thread::available_parallelism().map_or(1, |c| (c.get() / jobs).max(1));
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                let state = Arc::clone(&state);
                let (report, first_error, next) = (&report, &first_error, &next);
                scope.spawn(move || {
                    loop {
                        let (lock, cvar) = &*state;
                        let mut s = lock.lock().expect("sweep state");
                        let i = loop {
                            match next(&mut s) {
                                Some(Some(i)) => break Some(i),
                                Some(None) => s = cvar.wait(s).expect("sweep state"),
                                None => break None,
                            }
                        };
                        let Some(i) = i else {
                            cvar.notify_all();
                            return;
                        };
                        s.running[i] = true;
                        drop(s);
                        let run = &self.runs[i];
                        report(&format!("start: {}", run.name));
                        let outcome = self.run_one(trainer, run, threads);
                        let mut s = lock.lock().expect("sweep state");
                        s.running[i] = false;
                        match outcome {
                            Ok(()) if finished(&self.dir.join(&run.name), run.steps) => {
                                s.status[i] = RunStatus::Done;
                                report(&format!("done: {}", run.name));
                            }
                            other => {
                                s.status[i] = RunStatus::Failed;
                                s.failed.insert(run.name.clone(), RunStatus::Failed);
                                let why = other.err().map_or("no final checkpoint".to_string(), |e| format!("{e:#}"));
                                report(&format!(
                                    "FAILED: {} ({why}; see {})",
                                    run.name,
                                    self.dir.join(format!("{}.log", run.name)).display()
                                ));
                            }
                        }
                        if let Err(e) = self.manifest(&s.failed).write(&self.dir) {
                            first_error.lock().expect("error slot").get_or_insert(e);
                        }
                        cvar.notify_all();
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().expect("error slot") {
            return Err(e);
        }
        let s = state.0.lock().expect("sweep state");
        let manifest = self.manifest(&s.failed);
        manifest.write(&self.dir)?;
        Ok(manifest)
    }

    /// Runs one run's trainer on `threads` cores (unless `LAB_THREADS` says otherwise), its
    /// output into the run's log.
    fn run_one(&self, trainer: &Path, run: &PlannedRun, threads: usize) -> Result<()> {
        let log_path = self.dir.join(format!("{}.log", run.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(trainer);
        if std::env::var_os("LAB_THREADS").is_none() {
            command.env("LAB_THREADS", threads.to_string());
        }
        let status = command
            .args(self.train_args(run))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("starting {}", trainer.display()))?;
        if !status.success() {
            bail!("the trainer exited with {status}");
        }
        Ok(())
    }

    /// A Slurm export: one job-array script per phase (one array task per run, the same trainer
    /// binary and run layout as the local pool) and `submit.sh`, which submits the phases in
    /// order, each after the previous one succeeded. `trainer` is the binary the scripts call
    /// (overridable with `$TRAINER`), `root` the directory config paths are relative to.
    pub fn slurm(&self, trainer: &Path, root: &Path) -> Result<Vec<(String, String)>> {
        let out = root.join(&self.dir).display().to_string();
        if out.contains(char::is_whitespace) {
            bail!(
                "the sweep directory {out} contains whitespace, which #SBATCH --output cannot take; choose another --out"
            );
        }
        let mut files = Vec::new();
        let phases = self.phases()?;
        let mut submit = String::from(
            "#!/usr/bin/env bash\n# Submits the sweep's phases in order; a phase starts when the previous one succeeded.\n\
             set -euo pipefail\ncd \"$(dirname \"$0\")\"\n",
        );
        for (p, runs) in phases.iter().enumerate() {
            let file = format!("phase{}.sh", p + 1);
            let mut s = String::new();
            let _ = writeln!(s, "#!/usr/bin/env bash");
            let _ = writeln!(s, "#SBATCH --job-name={}-{}", self.name, p + 1);
            let _ = writeln!(s, "#SBATCH --array=0-{}", runs.len() - 1);
            let _ = writeln!(s, "#SBATCH --cpus-per-task=1");
            // Slurm resolves --output against the submission directory; an absolute path does not
            // depend on where submit.sh is run from.
            let _ = writeln!(s, "#SBATCH --output={}/slurm/%x-%a.out", root.join(&self.dir).display());
            let _ = writeln!(
                s,
                "# Sweep {} (from {}), phase {} of {}: one array task per run. A finished run is skipped,\n\
                 # an interrupted one resumed, so a failed array can simply be submitted again.",
                self.name,
                self.file.display(),
                p + 1,
                phases.len()
            );
            let _ = writeln!(s, "set -euo pipefail");
            let _ = writeln!(s, "TRAINER=${{TRAINER:-{}}}", shell_quote(&trainer.display().to_string()));
            let _ = writeln!(s, "cd {}", shell_quote(&root.display().to_string()));
            let _ = writeln!(s, "case \"$SLURM_ARRAY_TASK_ID\" in");
            for (task, &i) in runs.iter().enumerate() {
                let r = &self.runs[i];
                let dir = self.dir.join(&r.name);
                let mut args = format!("--config {}", shell_quote(&r.config.display().to_string()));
                for o in &r.overrides {
                    let _ = write!(args, " --set {}", shell_quote(o));
                }
                let _ = writeln!(
                    s,
                    "  {task}) run={} steps={} args=({args}) ;;",
                    shell_quote(&dir.display().to_string()),
                    r.steps
                );
            }
            let _ = writeln!(s, "  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 1 ;;");
            let _ = writeln!(s, "esac");
            let _ = writeln!(
                s,
                "if [ -f \"$run/checkpoints/$(printf 'step_%06d' \"$steps\").json\" ]; then echo \"$run: done already\"; exit 0; fi"
            );
            let extra: String = self.trainer_args.iter().map(|a| format!(" {}", shell_quote(a))).collect();
            let _ = writeln!(
                s,
                "if compgen -G \"$run/checkpoints/step_*.json\" > /dev/null; then exec \"$TRAINER\" train --resume \"$run\" --quiet{extra}; fi"
            );
            let _ = writeln!(s, "exec \"$TRAINER\" train \"${{args[@]}}\" --out \"$run\" --quiet{extra}");
            files.push((file.clone(), s));
            if p == 0 {
                let _ = writeln!(submit, "job=$(sbatch --parsable {file})");
            } else {
                let _ = writeln!(submit, "job=$(sbatch --parsable --dependency=afterok:\"$job\" {file})");
            }
            // `--parsable` prints `jobid` or `jobid;cluster`.
            let _ = writeln!(submit, "job=${{job%%;*}}");
        }
        let _ = writeln!(submit, "echo \"submitted; the last phase is job $job\"");
        files.push(("submit.sh".into(), submit));
        Ok(files)
    }

    /// Writes the Slurm export into `<sweep dir>/slurm/` (and the manifest beside it).
    pub fn write_slurm(&self, trainer: &Path, root: &Path) -> Result<PathBuf> {
        self.prepare(&BTreeMap::new())?;
        let dir = self.dir.join("slurm");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in self.slurm(trainer, root)? {
            let path = dir.join(&name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(dir)
    }
}

/// Quotes a word for bash when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

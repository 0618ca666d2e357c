//! Reading a run directory written by the trainer. The contract between the two is this file:
//! `checkpoints/step_NNNNNN.mpk` (weights) beside `checkpoints/step_NNNNNN.json`
//! ([`CheckpointMeta`], written last, so its presence marks a complete checkpoint), and the
//! `[eval]` table of `config.toml` ([`crate::EvalOptions`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use models::GptConfig;
use serde::{Deserialize, Serialize};
use tasks::TaskSpec;
use tasks::dataset::DataSpec;

use crate::EvalOptions;

/// The sidecar of a checkpoint: everything needed to rebuild and evaluate the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// Optimizer steps taken when the checkpoint was written.
    pub step: u64,
    /// The model's shape.
    pub model: GptConfig,
    /// The task.
    pub task: TaskSpec,
    /// Where the run's data came from.
    pub data: DataSpec,
    /// The objective's name (`ntp`, `teacherless`, ...).
    pub objective: String,
    /// Whether evaluation should also decode teacherless (the objective trains that way).
    pub teacherless: bool,
}

/// File stem of the checkpoint at `step` (weights at `<stem>.mpk`, sidecar at `<stem>.json`).
pub fn checkpoint_stem(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step_{step:06}"))
}

/// The complete checkpoints of a run, oldest first.
pub fn checkpoints(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run.join("checkpoints");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(step) = name.strip_prefix("step_").and_then(|s| s.strip_suffix(".json")) {
            if let Ok(step) = step.parse::<u64>() {
                found.push((step, checkpoint_stem(run, step)));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Reads a checkpoint's sidecar.
pub fn read_meta(stem: &Path) -> Result<CheckpointMeta> {
    let path = stem.with_extension("json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a lab checkpoint sidecar", path.display()))
}

/// The `[eval]` options of a run's `config.toml` (defaults when the table is absent), with
/// `--set key=value` overrides applied (keys relative to `[eval]`, e.g. `pass_at_k.samples=128`).
pub fn eval_options(run: &Path, overrides: &[String]) -> Result<EvalOptions> {
    let path = run.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut eval = match table.remove("eval") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("[eval] of {} is not a table", path.display()),
        None => toml::Table::new(),
    };
    for o in overrides {
        apply_override(&mut eval, o)?;
    }
    let options: EvalOptions =
        toml::Value::Table(eval).try_into().with_context(|| format!("the [eval] options of {}", path.display()))?;
    options.validate().map_err(anyhow::Error::msg)?;
    Ok(options)
}

/// Applies one `--set key=value` to a TOML table: dotted keys reach into sections (created when
/// absent), and the value is read as TOML (a bare word that is not TOML is taken as a string).
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment:?}: expected key=value, e.g. optimizer.lr=3e-4"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, path) = parts.split_last().expect("split gives at least one part");
    let mut node = table;
    for p in path {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("--set {key}: {p} is not a section"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

/// The latest complete checkpoint of a run, or an error that says why there is none.
pub fn latest(run: &Path) -> Result<(u64, PathBuf)> {
    if !run.is_dir() {
        bail!("{} is not a run directory", run.display());
    }
    checkpoints(run)?.pop().with_context(|| format!("{} holds no complete checkpoint yet", run.display()))
}

/// `eval.json` as written into a run directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalFile {
    /// The checkpoint's step.
    pub step: u64,
    /// The report.
    #[serde(flatten)]
    pub report: crate::EvalReport,
}

/// Writes `eval.json` and `failures.txt` into the run directory, each atomically.
pub fn write_report(run: &Path, step: u64, report: &crate::EvalReport) -> Result<()> {
    let json = serde_json::to_string_pretty(&EvalFile { step, report: report.clone() })? + "\n";
    write_atomic(&run.join("eval.json"), json.as_bytes())?;
    write_atomic(&run.join("failures.txt"), report.failures_text().as_bytes())
}

/// Writes a file by writing a temporary file beside it and renaming it into place, so that a
/// killed process never leaves a half-written file under the real name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", path.display()))
}

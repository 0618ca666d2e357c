//! What the evaluator reads from and writes into a run directory (whose layout is
//! `lab_core::run_dir`'s): the `[eval]` options of `config.toml`, the training's own `eval.json`
//! and `failures.txt`, and the reports of re-evaluations under `evals/`, one per thing scored, so
//! that `eval RUN --test-file F` never overwrites what the training wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lab_core::overrides::apply_override;
use lab_core::run_dir::{self, RunDir, write_atomic};
use sha2::{Digest, Sha256};
use tasks::one_line;

use crate::{EvalOptions, EvalReport};

/// A run's `config.toml` as a TOML table, with its path for messages. The evaluator reads the
/// sections it needs from it, not the trainer's `RunConfig`, which it does not link.
fn run_config(run: &Path) -> Result<(PathBuf, toml::Table)> {
    let path = RunDir(run).config();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("parsing {}: {}", path.display(), one_line(&e.to_string())))?;
    Ok((path, table))
}

/// The `[eval]` options of a run's `config.toml` (defaults when the table is absent), with
/// `--set key=value` overrides applied (keys relative to `[eval]`, e.g. `pass_at_k.samples=128`).
pub fn eval_options(run: &Path, overrides: &[String]) -> Result<EvalOptions> {
    let (path, mut table) = run_config(run)?;
    let mut eval = match table.remove("eval") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("[eval] of {} is not a table", path.display()),
        None => toml::Table::new(),
    };
    for o in overrides {
        apply_override(&mut eval, o)?;
    }
    let options: EvalOptions = toml::Value::Table(eval)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("the [eval] options: {}", one_line(&e.to_string())))?;
    options.validate().map_err(anyhow::Error::msg)?;
    Ok(options)
}

pub use lab_core::run_dir::Scored;

/// An evaluation report as written to disk (`eval.json`, or a re-evaluation under `evals/`); the
/// file's type is the run directory's (`lab_core::run_dir::EvalFile`), the report the evaluator's.
pub type EvalFile = run_dir::EvalFile<EvalReport>;

/// Whether the run trained with `model.bf16_products` (its `config.toml`; absent means f32): the
/// products its own evaluations decoded with, which a re-evaluation uses by default.
pub fn run_bf16_products(run: &Path) -> Result<bool> {
    let (path, table) = run_config(run)?;
    match table.get("model").and_then(|m| m.get("bf16_products")) {
        None => Ok(false),
        Some(toml::Value::Boolean(on)) => Ok(*on),
        Some(other) => bail!("model.bf16_products of {} is {other}, not true or false", path.display()),
    }
}

/// Writes the training's `eval.json` and `failures.txt` into the run directory, each atomically;
/// `bf16_products` says whether the decoding's products were bf16.
pub fn write_report(run: &Path, step: u64, scored: &Scored, bf16_products: bool, report: &EvalReport) -> Result<()> {
    let file =
        EvalFile { step, scored: Some(scored.clone()), bf16_products: Some(bf16_products), report: report.clone() };
    write_atomic(&RunDir(run).eval(), (serde_json::to_string_pretty(&file)? + "\n").as_bytes())?;
    write_atomic(&RunDir(run).failures(), report.failures_text().as_bytes())?;
    Ok(())
}

/// The name of a re-evaluation's report: the step, what was scored (`test` for the run's own
/// split, else the test file's stem) and, when the options differ from the run's `[eval]`, a
/// short hash of them: `step_000400-deg_2_path_5_nodes_50_test_20000`.
pub fn reevaluation_name(
    step: u64,
    test_file: Option<&Path>,
    options: &EvalOptions,
    run_options: &EvalOptions,
) -> String {
    let what = test_file.and_then(|f| f.file_stem()).map_or("test".to_string(), |s| {
        s.to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect()
    });
    let mut name = format!("step_{step:06}-{what}");
    if options != run_options {
        let json = serde_json::to_string(options).expect("options serialise");
        let hash = Sha256::digest(json.as_bytes());
        name.push_str(&format!("-opts-{}", hash.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()));
    }
    name
}

/// Writes a re-evaluation's report as `evals/<name>.json` and `evals/<name>-failures.txt`;
/// returns the two paths.
pub fn write_reevaluation(run: &Path, name: &str, file: &EvalFile) -> Result<(PathBuf, PathBuf)> {
    let dir = RunDir(run).evals();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{name}.json"));
    let failures = dir.join(format!("{name}-failures.txt"));
    write_atomic(&json, (serde_json::to_string_pretty(file)? + "\n").as_bytes())?;
    write_atomic(&failures, file.report.failures_text().as_bytes())?;
    Ok((json, failures))
}

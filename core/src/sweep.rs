//! The sweep manifest: the contract between `trainer sweep`, which writes it, and
//! `eval compare` / `eval plot`, which read it.
//!
//! A sweep directory holds `manifest.json`, the sweep file it was expanded from (`sweep.toml`),
//! one run directory per run (named as in the manifest) with its log beside it (`<name>.log`),
//! and, when exported for Slurm, `slurm/`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::run_dir;

/// The manifest format this build writes and reads. A manifest of another version is refused
/// with a message that says so, rather than misread.
pub const MANIFEST_VERSION: u32 = 1;

/// The manifest's name in a sweep directory.
pub const SWEEP_MANIFEST: &str = "manifest.json";

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Not started.
    Pending,
    /// Started, not finished (running now, or interrupted: it is resumed on the next pass).
    Started,
    /// Its last checkpoint is written.
    Done,
    /// The trainer exited with an error (see `<name>.log`).
    Failed,
    /// Not run because a run it reads failed.
    Skipped,
}

/// One run of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRun {
    /// The run's name, also its directory inside the sweep directory.
    pub name: String,
    /// The run's group: its name without the seed (the unit `eval compare` averages over).
    pub group: String,
    /// Its seed (`seeds.model` and `seeds.data`).
    pub seed: u64,
    /// The config file it starts from.
    pub config: String,
    /// Its `--set` overrides, in order.
    pub overrides: Vec<String>,
    /// Runs of this sweep that must be done first (runs that this one loads by path).
    pub after: Vec<String>,
    /// Steps it trains for.
    pub steps: u64,
    /// Where it stands.
    pub status: RunStatus,
    /// The final evaluation's metrics (`eval/free/exact`, ...), once done.
    pub result: BTreeMap<String, f64>,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] of the writer.
    pub version: u32,
    /// The sweep's name.
    pub name: String,
    /// The sweep file it was expanded from, as given.
    pub sweep_file: String,
    /// Every run, in the order the sweep file expands to.
    pub runs: Vec<ManifestRun>,
}

impl Manifest {
    /// Reads `dir/manifest.json`, refusing other versions and what is not a manifest.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(SWEEP_MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == MANIFEST_VERSION as u64 => {}
            Some(v) => bail!(
                "{} is a sweep manifest of version {v}, and this build reads version {MANIFEST_VERSION}: \
                 re-run the sweep with this build (finished runs are kept) or use the build that wrote it",
                path.display()
            ),
            None => bail!("{} is not a sweep manifest (no version)", path.display()),
        }
        serde_json::from_value(value).with_context(|| format!("{} is not a sweep manifest", path.display()))
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        run_dir::write_atomic(&dir.join(SWEEP_MANIFEST), json.as_bytes()).map(|_| ())
    }
}

/// Whether the run in `dir` has written its checkpoint at `steps` (the last one).
pub fn finished(dir: &Path, steps: u64) -> bool {
    run_dir::checkpoint_stem(dir, steps).with_extension("json").is_file()
}

/// Whether the run in `dir` has written any complete checkpoint (it can be resumed).
pub fn started(dir: &Path) -> bool {
    run_dir::checkpoints(dir).is_ok_and(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_versions_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest { version: MANIFEST_VERSION, name: "s".into(), sweep_file: "s.toml".into(), runs: vec![] };
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        std::fs::write(dir.path().join("manifest.json"), r#"{"version": 7, "name": "s"}"#).unwrap();
        let err = format!("{:#}", Manifest::read(dir.path()).unwrap_err());
        assert!(err.contains("version 7") && err.contains("reads version 1"), "{err}");
        std::fs::write(dir.path().join("manifest.json"), r#"{"runs": []}"#).unwrap();
        assert!(format!("{:#}", Manifest::read(dir.path()).unwrap_err()).contains("not a sweep manifest"));
    }
}

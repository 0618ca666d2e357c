//! A run's `[data]` section ([`DataSpec`]): where its examples come from, generated or read
//! from files. It lives here, beside the files it reads, because a checkpoint's sidecar records
//! it and the evaluator reloads a run's data from it without linking the trainer.

use super::splits::{draw_test, draw_train};
use super::*;

/// Where a run's examples come from: the `[data]` section of a training config, and what eval
/// reads back from a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A dataset directory written by `tasks gen`; its manifest's task must be the run's task.
    /// When absent, both splits are generated in memory from the task and `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A file that replaces the training split (NTF's line format for `.txt`, JSONL for
    /// `.jsonl`), e.g. NTF's own `deg_2_path_5_nodes_50_train_200000.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_file: Option<PathBuf>,
    /// A file that replaces the test split, e.g. NTF's own `deg_2_path_5_nodes_50_test_20000.txt`.
    /// A generated training split then holds out this file's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_file: Option<PathBuf>,
    /// Training examples to generate (ignored with `dir` or `train_file`).
    #[serde(default = "DataSpec::default_train")]
    pub train: u64,
    /// Test examples to generate (ignored with `dir` or `test_file`).
    #[serde(default = "DataSpec::default_test")]
    pub test: u64,
    /// Seed of generated splits.
    #[serde(default)]
    pub seed: u64,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            dir: None,
            train_file: None,
            test_file: None,
            train: Self::default_train(),
            test: Self::default_test(),
            seed: 0,
        }
    }
}

/// A task with its loaded (or generated) splits.
pub struct Loaded {
    /// The task, built from the spec.
    pub task: Box<dyn Task>,
    /// Training examples (empty when not asked for).
    pub train: Vec<Example>,
    /// Test examples.
    pub test: Vec<Example>,
}

impl DataSpec {
    fn default_train() -> u64 {
        200_000
    }

    fn default_test() -> u64 {
        20_000
    }

    /// Builds the task and loads (or generates) its splits; `with_train: false` skips the
    /// training split (evaluation needs only the test split).
    pub fn load(&self, spec: &TaskSpec, with_train: bool) -> Result<Loaded, DataError> {
        let task = spec.build().map_err(|e| DataError::Other(e.to_string()))?;
        let read = |file: &PathBuf| read_split_strict(task.as_ref(), file, Format::of_path(file));
        let (mut train, mut test) = (Vec::new(), Vec::new());
        match &self.dir {
            Some(dir) => {
                let (manifest, root) = Manifest::read(dir)?;
                if &manifest.task != spec {
                    return Err(DataError::Manifest {
                        path: dir.join(MANIFEST),
                        msg: format!(
                            "the dataset is {} but the config asks for {}",
                            serde_json::to_string(&manifest.task).unwrap_or_default(),
                            serde_json::to_string(spec).unwrap_or_default()
                        ),
                    });
                }
                let split = |name: &str| -> Result<Vec<Example>, DataError> {
                    let entry = manifest.splits.get(name).ok_or_else(|| DataError::Manifest {
                        path: dir.join(MANIFEST),
                        msg: format!("no {name} split"),
                    })?;
                    read_split_strict(task.as_ref(), &root.join(&entry.file), manifest.format)
                };
                test = match &self.test_file {
                    Some(file) => read(file)?,
                    None => split("test")?,
                };
                if with_train {
                    train = match &self.train_file {
                        Some(file) => read(file)?,
                        None => split("train")?,
                    };
                }
            }
            None => {
                let sizes = SplitSizes { train: self.train, test: self.test, seed: self.seed };
                let held_out = match &self.test_file {
                    Some(file) => {
                        test = read(file)?;
                        test.iter().map(|e| task.instance_key(e)).collect()
                    }
                    None => draw_test(task.as_ref(), sizes, &mut |ex| {
                        test.push(ex.clone());
                        Ok(())
                    })?,
                };
                if with_train {
                    train = match &self.train_file {
                        Some(file) => read(file)?,
                        None => {
                            let mut train = Vec::with_capacity(self.train as usize);
                            draw_train(task.as_ref(), sizes, &held_out, &mut |ex| {
                                train.push(ex.clone());
                                Ok(())
                            })?;
                            train
                        }
                    };
                }
            }
        }
        Ok(Loaded { task, train, test })
    }
}

//! `manifest.json`: what a dataset directory holds, and the checksums to trust its files by.

use super::*;

/// One split's entry in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    /// File name, relative to the manifest's directory.
    pub file: String,
    /// Number of examples (lines).
    pub examples: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

/// `manifest.json`: everything needed to rebuild the task and trust the files beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The program that wrote the dataset, with its version.
    pub generator: String,
    /// The task and its parameters.
    pub task: TaskSpec,
    /// The seed of both splits.
    pub seed: u64,
    /// Format of the split files.
    pub format: Format,
    /// The vocabulary, token names in id order.
    pub vocab: Vocab,
    /// Longest target, a decoding budget.
    pub max_target_len: usize,
    /// Token ending variable-length targets, if the task has one.
    pub eos: Option<String>,
    /// The split files by name (`train`, `test`).
    pub splits: BTreeMap<String, SplitFile>,
}

/// The name a manifest has in its dataset directory.
pub const MANIFEST: &str = "manifest.json";

impl Manifest {
    /// Reads `manifest.json` from a dataset directory (or the manifest file itself).
    pub fn read(path: &Path) -> Result<(Manifest, PathBuf), DataError> {
        let file = if path.is_dir() { path.join(MANIFEST) } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(io_err(&file))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| DataError::Manifest { path: file.clone(), msg: format!("not a lab manifest: {e}") })?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((manifest, dir))
    }

    /// Pretty JSON with the vocabulary on one line (it can hold thousands of tokens).
    pub fn to_json(&self) -> String {
        const MARK: &str = "@@vocab@@";
        let mut value = serde_json::to_value(self).expect("manifests serialise");
        value["vocab"] = serde_json::Value::String(MARK.into());
        let pretty = serde_json::to_string_pretty(&value).expect("values serialise");
        let vocab = serde_json::to_string(&self.vocab).expect("vocabularies serialise");
        pretty.replacen(&format!("\"{MARK}\""), &vocab, 1) + "\n"
    }

    /// Builds the task and checks that its vocabulary matches the manifest's.
    pub fn task(&self, path: &Path) -> Result<Box<dyn Task>, DataError> {
        let task =
            self.task.build().map_err(|e| DataError::Manifest { path: path.to_path_buf(), msg: e.to_string() })?;
        if task.vocab() != &self.vocab {
            let msg = "the vocabulary differs from the one this version of the lab builds for the task".into();
            return Err(DataError::Manifest { path: path.to_path_buf(), msg });
        }
        Ok(task)
    }
}

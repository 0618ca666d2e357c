//! The one example type every task produces and every consumer reads.

use serde::{Deserialize, Serialize};

use crate::vocab::Vocab;

/// One instance of a task: a prompt (the prefix) followed by its reference target.
///
/// The model sees `tokens[..prefix_len]` and must produce `tokens[prefix_len..]`; losses are
/// taken on target positions only. Whether a *different* target would also be right is the
/// task's verifier's business (see [`crate::Task::verify`]), not the example's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Example {
    /// Prefix then target, as token ids of the task's vocabulary.
    pub tokens: Vec<u32>,
    /// Number of prefix (prompt) tokens; the target is the rest.
    pub prefix_len: usize,
}

impl Example {
    /// Joins a prompt and a target.
    pub fn new(prefix: &[u32], target: &[u32]) -> Example {
        let mut tokens = Vec::with_capacity(prefix.len() + target.len());
        tokens.extend_from_slice(prefix);
        tokens.extend_from_slice(target);
        Example { tokens, prefix_len: prefix.len() }
    }

    /// The prompt tokens.
    pub fn prefix(&self) -> &[u32] {
        &self.tokens[..self.prefix_len]
    }

    /// The reference target tokens.
    pub fn target(&self) -> &[u32] {
        &self.tokens[self.prefix_len..]
    }

    /// The text form: prompt and target as whitespace-separated token names.
    pub fn text(&self, vocab: &Vocab) -> TextExample {
        TextExample { prompt: vocab.decode(self.prefix()), target: vocab.decode(self.target()) }
    }
}

/// The text form of an [`Example`]; one JSON object per line in `.jsonl` data files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextExample {
    /// The prompt, token names separated by spaces.
    pub prompt: String,
    /// The reference target, token names separated by spaces.
    pub target: String,
}

impl TextExample {
    /// Back to token ids; the error names the unknown token.
    pub fn encode(&self, vocab: &Vocab) -> Result<Example, String> {
        let prefix = vocab.encode(&self.prompt).map_err(|e| format!("prompt: {e}"))?;
        let target = vocab.encode(&self.target).map_err(|e| format!("target: {e}"))?;
        Ok(Example::new(&prefix, &target))
    }
}

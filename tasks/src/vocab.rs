//! Vocabularies: the mapping between token ids and their printable names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The printable name of the teacherless dummy token, as in Next-Token-Failures.
pub const DUMMY: &str = "$";

/// An ordered list of token names; a token's id is its index.
///
/// Every vocabulary of the lab contains the dummy token [`DUMMY`], so that teacherless training
/// (which replaces the target inputs by a dummy) works on every task without the task knowing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct Vocab {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// Builds a vocabulary from its token names, in id order. Names must be unique, non-empty and
    /// free of whitespace (texts are whitespace-separated token names).
    pub fn new(names: Vec<String>) -> Vocab {
        let ids: HashMap<String, u32> = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        assert_eq!(ids.len(), names.len(), "duplicate token names in a vocabulary");
        debug_assert!(names.iter().all(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
        Vocab { names, ids }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if the vocabulary has no tokens (never the case for a task's vocabulary).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The id of a token name.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of a token id.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// All names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The id of the teacherless dummy token `$`.
    pub fn dummy(&self) -> u32 {
        self.ids[DUMMY]
    }

    /// Token ids joined into text: names separated by single spaces. Unknown ids print as `<id?>`
    /// so that a model's out-of-range output can still be shown in a failure report.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::with_capacity(ids.len() * 3);
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match self.name(id) {
                Some(n) => out.push_str(n),
                None => {
                    out.push('<');
                    out.push_str(&id.to_string());
                    out.push_str("?>");
                }
            }
        }
        out
    }

    /// Whitespace-separated token names into ids; the error names the first unknown token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        text.split_whitespace().map(|t| self.id(t).ok_or_else(|| format!("unknown token {t:?}"))).collect()
    }
}

impl From<Vec<String>> for Vocab {
    fn from(names: Vec<String>) -> Vocab {
        Vocab::new(names)
    }
}

impl From<Vocab> for Vec<String> {
    fn from(v: Vocab) -> Vec<String> {
        v.names
    }
}

/// Helper for task vocabularies: `0..n` as numerals followed by the given symbols.
pub(crate) fn numerals_then(n: u32, symbols: &[&str]) -> Vocab {
    let mut names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    names.extend(symbols.iter().map(|s| s.to_string()));
    Vocab::new(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let v = numerals_then(5, &["|", "=", "/", DUMMY]);
        assert_eq!(v.len(), 9);
        assert_eq!(v.dummy(), 8);
        let ids = v.encode("3 | 4 = $").unwrap();
        assert_eq!(ids, vec![3, 5, 4, 6, 8]);
        assert_eq!(v.decode(&ids), "3 | 4 = $");
        assert!(v.encode("3 7").unwrap_err().contains("\"7\""));
        assert_eq!(v.decode(&[1, 42]), "1 <42?>");
    }

    #[test]
    fn serializes_as_a_list_of_names() {
        let v = numerals_then(2, &[DUMMY]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"["0","1","$"]"#);
        assert_eq!(serde_json::from_str::<Vocab>(&json).unwrap(), v);
    }
}

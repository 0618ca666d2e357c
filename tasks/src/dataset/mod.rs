//! Data files: generating train/test splits, writing and reading them (JSONL or NTF's line
//! format), and the `manifest.json` that describes a dataset directory.
//!
//! Splits are drawn from independent ChaCha8 streams of one seed: the test split from stream 1,
//! the training split from stream 0 with every instance that the test split holds rejected, so
//! the two share no instance (see [`Task::instance_key`]) and the test split does not depend on
//! how many training examples were asked for. Duplicates *within* a split are kept, as NTF does:
//! they are draws from the task's distribution.
//!
//! Layout: `splits.rs` draws the splits, `formats.rs` turns examples into lines and lines back
//! into examples, `files.rs` writes a dataset directory (atomically, with checksums),
//! `manifest.rs` describes one, and `spec.rs` is a run's `[data]` section ([`DataSpec`]), which
//! loads or generates its splits.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::path_star::{PathStar, PathStarParams};
use crate::{Example, Task, TaskSpec, TextExample, Vocab};

mod files;
mod formats;
mod manifest;
mod spec;
mod splits;

pub use files::{ntf_params_from_name, sha256_file, split_file_names, write_dataset};
pub use formats::{LineWriter, parse_line, read_head, read_head_from, read_split, read_split_from, read_split_strict};
pub use manifest::{MANIFEST, Manifest, SplitFile};
pub use spec::{DataSpec, Loaded};
pub use splits::{SplitSizes, generate, split_rng};

/// On-disk format of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `{"prompt": ..., "target": ...}` object per line, token names separated by spaces.
    Jsonl,
    /// Next-Token-Failures' line format (path-star only): `u,v|u,v|.../s,g=p1,p2,...`.
    Ntf,
}

impl Format {
    /// The format a file name suggests: `.jsonl` is JSONL, anything else NTF.
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Format::Jsonl,
            _ => Format::Ntf,
        }
    }
}

/// Why a dataset could not be generated, written or read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read or written.
    ///
    /// The OS's error is part of the message and deliberately not the error's
    /// [`source`](std::error::Error::source): a chain printer (`anyhow`'s `{:#}`) would print
    /// it twice otherwise.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A data file as a whole is unusable: it holds no examples, or its format does not suit
    /// the task.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A line of a data file is malformed or fails the task's checks.
    #[error("{path}:{line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A manifest is missing, unreadable or inconsistent.
    #[error("{path}: {msg}")]
    Manifest {
        /// The manifest (or the directory that should hold one).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Anything else, stated in words (e.g. a format the task cannot be written in).
    #[error("{0}")]
    Other(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |error| DataError::Io { path: path.to_path_buf(), error }
}

#[cfg(test)]
mod tests {
    use super::formats::BLANK_LINE;
    use super::*;
    use crate::spec::TaskSpec;

    #[test]
    fn splits_share_no_instance_even_when_the_space_is_small() {
        // G(2,3,6) has 6*5*4*3*2 = 720 instances: the test split covers a good share of them.
        let spec = TaskSpec::PathStar(PathStarParams { degree: 2, path_len: 3, nodes: 6, reverse: false });
        let task = spec.build().unwrap();
        let (train, test) = generate(task.as_ref(), SplitSizes { train: 2000, test: 300, seed: 5 }).unwrap();
        let test_keys: HashSet<_> = test.iter().map(|e| task.instance_key(e)).collect();
        assert!(test_keys.len() > 150, "the test split is varied");
        assert!(train.iter().all(|e| !test_keys.contains(&task.instance_key(e))));
        assert_eq!(train.len(), 2000);
    }

    #[test]
    fn an_exhausted_instance_space_is_an_error_not_a_hang() {
        // G(1,2,2) has exactly 2 instances; 50 test draws take both.
        let spec = TaskSpec::PathStar(PathStarParams { degree: 1, path_len: 2, nodes: 2, reverse: false });
        let task = spec.build().unwrap();
        let err = generate(task.as_ref(), SplitSizes { train: 10, test: 50, seed: 0 }).unwrap_err();
        assert!(err.to_string().contains("too few distinct instances"), "{err}");
    }

    #[test]
    fn test_split_does_not_depend_on_the_training_size() {
        let task = TaskSpec::PathStar(PathStarParams::default()).build().unwrap();
        let (_, a) = generate(task.as_ref(), SplitSizes { train: 10, test: 20, seed: 1 }).unwrap();
        let (_, b) = generate(task.as_ref(), SplitSizes { train: 500, test: 20, seed: 1 }).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn data_specs_load_generated_and_written_splits_alike() {
        let spec = TaskSpec::PathStar(PathStarParams::default());
        let data = DataSpec { train: 300, test: 40, seed: 2, ..Default::default() };
        let generated = data.load(&spec, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sizes = SplitSizes { train: 300, test: 40, seed: 2 };
        write_dataset(generated.task.as_ref(), sizes, Format::Ntf, dir.path(), &mut |_| {}).unwrap();
        let read = DataSpec { dir: Some(dir.path().to_path_buf()), ..Default::default() }.load(&spec, true).unwrap();
        assert_eq!((read.train, read.test), (generated.train, generated.test));
        let other = TaskSpec::PathStar(PathStarParams { nodes: 60, ..Default::default() });
        let err = DataSpec { dir: Some(dir.path().to_path_buf()), ..Default::default() }.load(&other, false);
        assert!(err.err().unwrap().to_string().contains("the dataset is"));
    }

    #[test]
    fn a_generated_training_split_holds_out_an_external_test_file() {
        // G(2,3,6) is small enough that 2,000 training draws would hit the file's instances.
        let spec = TaskSpec::PathStar(PathStarParams { degree: 2, path_len: 3, nodes: 6, reverse: false });
        let task = spec.build().unwrap();
        let (_, external) = generate(task.as_ref(), SplitSizes { train: 0, test: 100, seed: 9 }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deg_2_path_3_nodes_6_test_100.txt");
        let mut writer = LineWriter::new(task.as_ref(), Format::Ntf).unwrap();
        let text: String = external.iter().map(|e| format!("{}\n", writer.line(e))).collect();
        std::fs::write(&file, text).unwrap();
        let data = DataSpec { train: 2000, test_file: Some(file), ..Default::default() };
        let loaded = data.load(&spec, true).unwrap();
        assert_eq!(loaded.test, external);
        let keys: HashSet<_> = external.iter().map(|e| task.instance_key(e)).collect();
        assert!(loaded.train.iter().all(|e| !keys.contains(&task.instance_key(e))));
        assert_eq!(loaded.train.len(), 2000);
    }

    const NTF_LINE: &str = "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12";

    /// A reader's name, what it returned, and the bad lines it reported.
    type Reading = (&'static str, Result<Vec<Example>, DataError>, Vec<DataError>);

    /// Every reader on `bytes`: the lenient one (with the bad lines it reported), the strict one
    /// and the head reader, from memory and from a file.
    fn read_all_ways(task: &dyn Task, name: &str, bytes: &[u8]) -> Vec<Reading> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let format = Format::of_path(&path);
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let r = read_split(task, &path, format, &mut |e| {
            bad.push(e);
            true
        });
        out.push(("read_split", r, std::mem::take(&mut bad)));
        let r = read_split_from(task, bytes, &path, format, &mut |e| {
            bad.push(e);
            true
        });
        out.push(("read_split_from", r, bad));
        out.push(("read_split_strict", read_split_strict(task, &path, format), Vec::new()));
        out.push(("read_head", read_head(task, &path, format, 10), Vec::new()));
        out.push(("read_head_from", read_head_from(task, bytes, &path, format, 10), Vec::new()));
        out
    }

    #[test]
    fn files_without_examples_are_refused_by_every_reader() {
        let task = TaskSpec::PathStar(PathStarParams::default()).build().unwrap();
        let jsonl = TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        for (task, name, bytes, why) in [
            (&task, "deg_2_path_5_nodes_50_test_0.txt", "", "no examples (the file is empty)"),
            (&task, "deg_2_path_5_nodes_50_test_0.txt", "\n\n", "no examples (only blank lines)"),
            (&jsonl, "test.jsonl", "", "no examples (the file is empty)"),
            (&jsonl, "test.jsonl", "\r\n  \n\t\n", "no examples (only blank lines)"),
        ] {
            for (reader, result, bad) in read_all_ways(task.as_ref(), name, bytes.as_bytes()) {
                let err = result.expect_err(reader);
                assert!(matches!(err, DataError::File { .. }), "{reader}: {err:?}");
                let msg = err.to_string();
                assert!(msg.ends_with(&format!("{name}: {why}")), "{reader}: {msg}");
                assert!(bad.is_empty(), "{reader}: {bad:?}");
            }
        }
        // Asking for no examples at all is not asking about the file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.jsonl"), "").unwrap();
        assert!(read_head(jsonl.as_ref(), &dir.path().join("test.jsonl"), Format::Jsonl, 0).unwrap().is_empty());
    }

    #[test]
    fn trailing_blank_lines_are_accepted_and_blank_lines_before_an_example_are_not() {
        let task = TaskSpec::PathStar(PathStarParams::default()).build().unwrap();
        let ntf = "deg_2_path_5_nodes_50_test_2.txt";
        for ending in ["\n\n", "\n\n\n", "\n\n  \n", "\r\n\r\n", "\n\r\n"] {
            let text = format!("{NTF_LINE}\n{NTF_LINE}{ending}");
            for (reader, result, bad) in read_all_ways(task.as_ref(), ntf, text.as_bytes()) {
                assert_eq!(result.expect(reader).len(), 2, "{reader} on {ending:?}");
                assert!(bad.is_empty(), "{reader}: {bad:?}");
            }
        }
        let key_recall = TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let mut writer = LineWriter::new(key_recall.as_ref(), Format::Jsonl).unwrap();
        let line = writer.line(&key_recall.sample(&mut split_rng(0, false))).to_string();
        let text = format!("{line}\n{line}\n\n");
        for (reader, result, _) in read_all_ways(key_recall.as_ref(), "test.jsonl", text.as_bytes()) {
            assert_eq!(result.expect(reader).len(), 2, "{reader}");
        }

        // Lines 2 and 3 are blank but an example follows: both are bad, by number.
        let text = format!("{NTF_LINE}\n\n \n{NTF_LINE}\n\n");
        for (reader, result, bad) in read_all_ways(task.as_ref(), ntf, text.as_bytes()) {
            let msg = match result {
                Ok(examples) => {
                    assert_eq!(examples.len(), 2, "{reader}");
                    let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
                    assert_eq!(lines.len(), 2, "{reader}: {lines:?}");
                    assert!(lines[1].ends_with(&format!("{ntf}:3: {BLANK_LINE}")), "{reader}: {lines:?}");
                    lines[0].clone()
                }
                Err(e) => e.to_string(),
            };
            assert!(msg.ends_with(&format!("{ntf}:2: {BLANK_LINE}")), "{reader}: {msg}");
        }
    }

    #[test]
    fn non_utf8_lines_are_bad_lines_with_their_number_not_unreadable_files() {
        let task = TaskSpec::PathStar(PathStarParams::default()).build().unwrap();
        let mut bytes = format!("{NTF_LINE}\n").into_bytes();
        bytes.extend(b"32,3\xff|16\n");
        bytes.extend(format!("{NTF_LINE}\n").as_bytes());
        let mut bad = Vec::new();
        let path = Path::new("deg_2_path_5_nodes_50_test_3.txt");
        let examples = read_split_from(task.as_ref(), &bytes[..], path, Format::Ntf, &mut |e| {
            bad.push(e.to_string());
            true
        })
        .unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(bad, ["deg_2_path_5_nodes_50_test_3.txt:2: not UTF-8 text (byte 5 of the line is not valid UTF-8)"]);
    }

    #[test]
    fn messages_about_a_line_are_one_short_line() {
        // serde echoes an unknown field's name verbatim, newline and all.
        let task = TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let line = format!("{{\"prompt\":\"s1 ?\",\"target\":\"s1\",\"a\\nb{}\":1}}\n", "x".repeat(1000));
        let err = read_split_strict_from(task.as_ref(), line.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("a b"), "{err}");
        assert!(err.len() < 400 && err.ends_with(" ..."), "{err}");
    }

    fn read_split_strict_from(task: &dyn Task, bytes: &[u8]) -> Result<Vec<Example>, DataError> {
        read_head_from(task, bytes, Path::new("test.jsonl"), Format::Jsonl, usize::MAX)
    }

    #[test]
    fn ntf_files_of_other_tasks_are_refused_as_a_whole() {
        let task = TaskSpec::default_of("sibling").unwrap().build().unwrap();
        let err = read_head_from(task.as_ref(), &b"a\nb\n"[..], Path::new("x.txt"), Format::Ntf, 5).unwrap_err();
        assert!(err.to_string().starts_with("x.txt: the ntf format is for path-star only"), "{err}");
    }

    #[test]
    fn os_errors_are_printed_once() {
        let task = TaskSpec::PathStar(PathStarParams::default()).build().unwrap();
        let err = read_split_strict(task.as_ref(), Path::new("no/such/file.txt"), Format::Ntf).unwrap_err();
        assert!(std::error::Error::source(&err).is_none());
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chain.matches("os error").count(), 1, "{chain}");
    }

    #[test]
    fn a_failed_generation_leaves_nothing_behind() {
        // G(1,2,2) has two instances: the test split is written, then the training split fails.
        let task =
            TaskSpec::PathStar(PathStarParams { degree: 1, path_len: 2, nodes: 2, reverse: false }).build().unwrap();
        let sizes = SplitSizes { train: 10, test: 50, seed: 0 };
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        let err = write_dataset(task.as_ref(), sizes, Format::Ntf, &dir, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("too few distinct instances"), "{err}");
        assert!(!root.path().join("a").exists(), "the directories it created are gone");

        // In a directory that exists, only what the generation wrote goes.
        let dir = root.path().join("existing");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        write_dataset(task.as_ref(), sizes, Format::Ntf, &dir, &mut |_| {}).unwrap_err();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["notes.txt"]);

        // Unknown formats and empty splits are refused before anything is created.
        let sibling = TaskSpec::default_of("sibling").unwrap().build().unwrap();
        let dir = root.path().join("d");
        assert!(write_dataset(sibling.as_ref(), sizes, Format::Ntf, &dir, &mut |_| {}).is_err());
        let empty = SplitSizes { train: 0, ..sizes };
        let err = write_dataset(sibling.as_ref(), empty, Format::Jsonl, &dir, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("each split needs at least one"), "{err}");
        assert!(!dir.exists());

        // A successful generation leaves exactly its three files.
        let ok = SplitSizes { train: 5, test: 2, seed: 0 };
        write_dataset(sibling.as_ref(), ok, Format::Jsonl, &dir, &mut |_| {}).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["manifest.json", "test.jsonl", "train.jsonl"]);
    }

    #[test]
    fn ntf_names_give_parameters() {
        let p = ntf_params_from_name(Path::new("x/deg_5_path_3_nodes_50_test_20000.txt")).unwrap();
        assert_eq!(p, PathStarParams { degree: 5, path_len: 3, nodes: 50, reverse: false });
        assert!(ntf_params_from_name(Path::new("test.txt")).is_none());
    }
}

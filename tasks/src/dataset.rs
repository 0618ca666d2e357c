//! Data files: generating train/test splits, writing and reading them (JSONL or NTF's line
//! format), and the `manifest.json` that describes a dataset directory.
//!
//! Splits are drawn from independent ChaCha8 streams of one seed: the test split from stream 1,
//! the training split from stream 0 with every instance that the test split holds rejected, so
//! the two share no instance (see [`Task::instance_key`]) and the test split does not depend on
//! how many training examples were asked for. Duplicates *within* a split are kept, as NTF does:
//! they are draws from the task's distribution.

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

/// Requested sizes and seed of a dataset.
#[derive(Clone, Copy, Debug)]
pub struct SplitSizes {
    /// Training examples.
    pub train: u64,
    /// Test examples.
    pub test: u64,
    /// Seed of both splits.
    pub seed: u64,
}

/// The random stream of a split, so that the streams never overlap.
pub fn split_rng(seed: u64, test: bool) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(if test { 1 } else { 0 });
    rng
}

/// Draws the test split then the training split in memory (see the module docs). For large
/// datasets prefer [`write_dataset`], which streams the training split to disk.
pub fn generate(task: &dyn Task, sizes: SplitSizes) -> Result<(Vec<Example>, Vec<Example>), DataError> {
    let mut test = Vec::with_capacity(sizes.test as usize);
    let mut train = Vec::with_capacity(sizes.train as usize);
    let held_out = draw_test(task, sizes, &mut |ex| {
        test.push(ex.clone());
        Ok(())
    })?;
    draw_train(task, sizes, &held_out, &mut |ex| {
        train.push(ex.clone());
        Ok(())
    })?;
    Ok((train, test))
}

fn draw_test(
    task: &dyn Task,
    sizes: SplitSizes,
    sink: &mut dyn FnMut(&Example) -> Result<(), DataError>,
) -> Result<HashSet<Vec<u32>>, DataError> {
    let mut rng = split_rng(sizes.seed, true);
    let mut keys = HashSet::with_capacity(sizes.test as usize);
    for _ in 0..sizes.test {
        let ex = task.sample_test(&mut rng);
        keys.insert(task.instance_key(&ex));
        sink(&ex)?;
    }
    Ok(keys)
}

fn draw_train(
    task: &dyn Task,
    sizes: SplitSizes,
    held_out: &HashSet<Vec<u32>>,
    sink: &mut dyn FnMut(&Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut rng = split_rng(sizes.seed, false);
    // Rejection must not spin forever when the test split holds most of a small instance space.
    let max_rejections = 10_000 + 20 * sizes.train;
    let mut rejected = 0u64;
    let mut kept = 0u64;
    while kept < sizes.train {
        let ex = task.sample(&mut rng);
        if !held_out.is_empty() && held_out.contains(&task.instance_key(&ex)) {
            rejected += 1;
            if rejected > max_rejections {
                return Err(DataError::Other(format!(
                    "the task has too few distinct instances for {} test and {} training examples: \
                     {rejected} of {} training draws were test instances; ask for fewer test examples \
                     or a larger task",
                    sizes.test,
                    sizes.train,
                    rejected + kept
                )));
            }
            continue;
        }
        kept += 1;
        sink(&ex)?;
    }
    Ok(())
}

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Formats examples as lines of a split file.
pub struct LineWriter<'a> {
    task: &'a dyn Task,
    format: Format,
    path_star: Option<&'a PathStar>,
    line: String,
}

impl<'a> LineWriter<'a> {
    /// A writer for `task` in `format`; NTF is only for path-star.
    pub fn new(task: &'a dyn Task, format: Format) -> Result<LineWriter<'a>, DataError> {
        let path_star = match format {
            Format::Ntf => Some(task.as_path_star().ok_or_else(|| {
                DataError::Other(format!("the ntf format is for path-star only; write {} as jsonl", task.spec().name()))
            })?),
            Format::Jsonl => None,
        };
        Ok(LineWriter { task, format, path_star, line: String::with_capacity(256) })
    }

    /// One example as a line, without the newline.
    pub fn line(&mut self, example: &Example) -> &str {
        self.line.clear();
        match (self.format, self.path_star) {
            (Format::Ntf, Some(ps)) => ps.to_ntf_line(example, &mut self.line),
            _ => {
                let text = example.text(self.task.vocab());
                // Serialising two strings cannot fail.
                self.line = serde_json::to_string(&text).expect("strings serialise");
            }
        }
        &self.line
    }
}

/// Writes one split file under the temporary name `tmp` and returns its entry (named `file`).
/// The caller renames it into place once the whole dataset is written.
fn write_split(
    tmp: &Path,
    file: &str,
    writer: &mut LineWriter<'_>,
    fill: impl FnOnce(&mut dyn FnMut(&Example) -> Result<(), DataError>) -> Result<(), DataError>,
) -> Result<SplitFile, DataError> {
    let handle = File::create(tmp).map_err(io_err(tmp))?;
    let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, handle), hasher: Sha256::new(), bytes: 0 };
    let mut examples = 0u64;
    fill(&mut |ex| {
        let line = writer.line(ex);
        out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(io_err(tmp))?;
        examples += 1;
        Ok(())
    })?;
    out.flush().map_err(io_err(tmp))?;
    let sha256 = hex(&out.hasher.finalize());
    Ok(SplitFile { file: file.to_string(), examples, bytes: out.bytes, sha256 })
}

/// What a dataset being written has put on disk so far; unless [`Staging::commit`] completes,
/// dropping it removes all of that (temporary files, files already renamed into place, and the
/// directories it created), so that a failed `tasks gen` leaves nothing half-made behind.
struct Staging {
    /// Directories created for the dataset, outermost first.
    created: Vec<PathBuf>,
    /// Temporary files written so far, with the names they are renamed to on commit.
    staged: Vec<(PathBuf, PathBuf)>,
    /// Files renamed into place so far.
    committed: Vec<PathBuf>,
    done: bool,
}

impl Staging {
    /// Creates `dir` and any missing parents, remembering which ones it created.
    fn new(dir: &Path) -> Result<Staging, DataError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        missing.reverse();
        let mut staging = Staging { created: Vec::new(), staged: Vec::new(), committed: Vec::new(), done: false };
        for d in missing {
            std::fs::create_dir(&d).map_err(io_err(&d))?;
            staging.created.push(d);
        }
        // `dir` existed already, but perhaps not as a directory.
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(staging)
    }

    /// The temporary name for the file `name` in `dir`, to be renamed to `name` on commit.
    fn stage(&mut self, dir: &Path, name: &str) -> PathBuf {
        let tmp = dir.join(format!("{name}.partial"));
        self.staged.push((tmp.clone(), dir.join(name)));
        tmp
    }

    /// Renames every staged file into place, in the order staged (the manifest last, so that a
    /// manifest never describes files that are not there).
    fn commit(mut self) -> Result<(), DataError> {
        for (tmp, path) in std::mem::take(&mut self.staged) {
            match std::fs::rename(&tmp, &path) {
                Ok(()) => self.committed.push(path),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(DataError::Io { path, error: e });
                }
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for (tmp, _) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
        for path in &self.committed {
            let _ = std::fs::remove_file(path);
        }
        // Innermost first; a directory that holds anything else stays.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// File names of the two splits: NTF's own naming for NTF files, so that NTF's scripts can read
/// them, and `train.jsonl` / `test.jsonl` otherwise.
pub fn split_file_names(task: &dyn Task, format: Format, sizes: SplitSizes) -> (String, String) {
    match (format, task.as_path_star()) {
        (Format::Ntf, Some(ps)) => {
            let p = ps.params();
            let stem = p.ntf_stem();
            let rev = if p.reverse { "_reverse" } else { "" };
            (format!("{stem}{rev}_train_{}.txt", sizes.train), format!("{stem}{rev}_test_{}.txt", sizes.test))
        }
        _ => ("train.jsonl".into(), "test.jsonl".into()),
    }
}

/// Generates both splits of a dataset into `dir` (created if needed) and writes its manifest.
/// `progress` is called with the number of examples written so far, every few thousand.
///
/// The files are written under temporary names and renamed into place only once all of them
/// are complete; on any failure everything written is removed again, as are the directories
/// this call created. Both splits must hold at least one example (the readers refuse a file
/// without any).
pub fn write_dataset(
    task: &dyn Task,
    sizes: SplitSizes,
    format: Format,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Manifest, DataError> {
    if sizes.train == 0 || sizes.test == 0 {
        return Err(DataError::Other(format!(
            "{} train and {} test examples asked for: each split needs at least one (a data file \
             without examples is refused when read)",
            sizes.train, sizes.test
        )));
    }
    let mut writer = LineWriter::new(task, format)?;
    let (train_name, test_name) = split_file_names(task, format, sizes);
    let mut staging = Staging::new(dir)?;
    let mut done = 0u64;
    let mut tick = |done: &mut u64| {
        *done += 1;
        if *done % 4096 == 0 {
            progress(*done);
        }
    };

    let mut held_out = HashSet::new();
    let tmp = staging.stage(dir, &test_name);
    let test_file = write_split(&tmp, &test_name, &mut writer, |sink| {
        held_out = draw_test(task, sizes, &mut |ex| {
            tick(&mut done);
            sink(ex)
        })?;
        Ok(())
    })?;
    let tmp = staging.stage(dir, &train_name);
    let train_file = write_split(&tmp, &train_name, &mut writer, |sink| {
        draw_train(task, sizes, &held_out, &mut |ex| {
            tick(&mut done);
            sink(ex)
        })
    })?;
    progress(done);

    let manifest = Manifest {
        generator: format!("tasks {}", env!("CARGO_PKG_VERSION")),
        task: task.spec().clone(),
        seed: sizes.seed,
        format,
        vocab: task.vocab().clone(),
        max_target_len: task.max_target_len(),
        eos: task.eos().map(|e| task.vocab().decode(&[e])),
        splits: BTreeMap::from([("train".to_string(), train_file), ("test".to_string(), test_file)]),
    };
    let tmp = staging.stage(dir, MANIFEST);
    std::fs::write(&tmp, manifest.to_json()).map_err(io_err(&tmp))?;
    staging.commit()?;
    Ok(manifest)
}

/// Parses one line of a split file into an example and checks it with the task.
pub fn parse_line(
    task: &dyn Task,
    format: Format,
    path_star: Option<&PathStar>,
    line: &str,
) -> Result<Example, String> {
    let example = match (format, path_star) {
        (Format::Ntf, Some(ps)) => return ps.parse_ntf_line(line),
        (Format::Ntf, None) => return Err("the ntf format is for path-star only".into()),
        (Format::Jsonl, _) => {
            let text: TextExample =
                serde_json::from_str(line).map_err(|e| format!("not a {{\"prompt\", \"target\"}} object: {e}"))?;
            text.encode(task.vocab())?
        }
    };
    task.check(&example)?;
    Ok(example)
}

/// Reads every line of a split file, checking each; `on_bad` sees each bad line (as a
/// [`DataError::Line`]) and decides whether to go on (`true`) or stop. Returns the good examples.
///
/// Blank lines at the end of the file are ignored; a blank line before an example is a bad line.
/// A file without a single example (empty, or blank lines only) is an error
/// ([`DataError::File`]), as is NTF's format for a task other than path-star.
pub fn read_split(
    task: &dyn Task,
    path: &Path,
    format: Format,
    on_bad: &mut dyn FnMut(DataError) -> bool,
) -> Result<Vec<Example>, DataError> {
    let file = File::open(path).map_err(io_err(path))?;
    read_lines(task, BufReader::with_capacity(1 << 20, file), path, format, usize::MAX, on_bad)
}

/// [`read_split`] from any reader (standard input, bytes in memory, ...); `path` names the
/// source in errors.
pub fn read_split_from(
    task: &dyn Task,
    reader: impl BufRead,
    path: &Path,
    format: Format,
    on_bad: &mut dyn FnMut(DataError) -> bool,
) -> Result<Vec<Example>, DataError> {
    read_lines(task, reader, path, format, usize::MAX, on_bad)
}

/// Reads and checks the first `limit` examples of a split file, failing at the first bad line.
/// Blank lines and empty files are treated as [`read_split`] treats them.
pub fn read_head(task: &dyn Task, path: &Path, format: Format, limit: usize) -> Result<Vec<Example>, DataError> {
    let file = File::open(path).map_err(io_err(path))?;
    read_head_from(task, BufReader::with_capacity(1 << 20, file), path, format, limit)
}

/// [`read_head`] from any reader; `path` names the source in errors.
pub fn read_head_from(
    task: &dyn Task,
    reader: impl BufRead,
    path: &Path,
    format: Format,
    limit: usize,
) -> Result<Vec<Example>, DataError> {
    let mut first = None;
    let examples = read_lines(task, reader, path, format, limit, &mut |e| {
        first = Some(e);
        false
    })?;
    first.map_or(Ok(examples), Err)
}

/// Why a line that is blank (empty or white space only) is bad when an example follows it.
const BLANK_LINE: &str = "blank line (blank lines may only end a file)";

/// The reader behind all the others: up to `limit` non-blank lines, each parsed and checked.
fn read_lines(
    task: &dyn Task,
    mut reader: impl BufRead,
    path: &Path,
    format: Format,
    limit: usize,
    on_bad: &mut dyn FnMut(DataError) -> bool,
) -> Result<Vec<Example>, DataError> {
    let path_star = match format {
        Format::Ntf => Some(task.as_path_star().ok_or_else(|| DataError::File {
            path: path.to_path_buf(),
            msg: format!("the ntf format is for path-star only; {} data is JSONL (a .jsonl file)", task.spec().name()),
        })?),
        Format::Jsonl => None,
    };
    let bad = |line: usize, msg: String| DataError::Line { path: path.to_path_buf(), line, msg: one_line(msg) };
    let mut examples = Vec::new();
    let mut buf = Vec::with_capacity(256);
    // Line numbers are 1-based; `number` is the last line read.
    let mut number = 0usize;
    // Non-blank lines read, and the blank lines read since the last of them (as the first
    // one's number and a count): they are bad only if another non-blank line follows.
    let mut read = 0usize;
    let mut blanks: Option<(usize, usize)> = None;
    while read < limit {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err(path))? == 0 {
            break;
        }
        number += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes);
        if text.is_ok_and(|t| t.trim().is_empty()) {
            blanks = Some(blanks.map_or((number, 1), |(first, n)| (first, n + 1)));
            continue;
        }
        read += 1;
        if let Some((first, n)) = blanks.take() {
            for line in first..first + n {
                if !on_bad(bad(line, BLANK_LINE.into())) {
                    return Ok(examples);
                }
            }
        }
        let parsed = match text {
            Ok(text) => parse_line(task, format, path_star, text),
            Err(e) => Err(format!("not UTF-8 text (byte {} of the line is not valid UTF-8)", e.valid_up_to() + 1)),
        };
        match parsed {
            Ok(ex) => examples.push(ex),
            Err(msg) => {
                if !on_bad(bad(number, msg)) {
                    return Ok(examples);
                }
            }
        }
    }
    if read == 0 && limit > 0 {
        let msg = if number == 0 { "no examples (the file is empty)" } else { "no examples (only blank lines)" };
        return Err(DataError::File { path: path.to_path_buf(), msg: msg.into() });
    }
    Ok(examples)
}

/// The longest message (in characters) a bad line gets; longer ones echo too much of the line.
const MAX_MESSAGE: usize = 200;

/// A message about a line as one short line of text: control characters (a JSON key may hold an
/// escaped newline, which serde's messages echo verbatim) and Unicode line separators escaped,
/// and anything past [`MAX_MESSAGE`] characters cut off.
fn one_line(msg: String) -> String {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if msg.chars().count() <= MAX_MESSAGE && !msg.chars().any(unsafe_char) {
        return msg;
    }
    let mut out = String::with_capacity(MAX_MESSAGE + 8);
    for (i, c) in msg.chars().enumerate() {
        if i == MAX_MESSAGE {
            out.push_str(" ...");
            break;
        }
        if unsafe_char(c) { out.extend(c.escape_default()) } else { out.push(c) }
    }
    out
}

/// Reads a split file, failing at the first bad line.
pub fn read_split_strict(task: &dyn Task, path: &Path, format: Format) -> Result<Vec<Example>, DataError> {
    read_head(task, path, format, usize::MAX)
}

/// Path-star parameters from an NTF file name such as `deg_2_path_5_nodes_50_test_20000.txt`.
pub fn ntf_params_from_name(path: &Path) -> Option<PathStarParams> {
    let name = path.file_name()?.to_str()?;
    let field = |key: &str| -> Option<u32> {
        let rest = &name[name.find(key)? + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some(PathStarParams {
        degree: field("deg_")?,
        path_len: field("path_")?,
        nodes: field("nodes_")?,
        reverse: name.contains("reverse"),
    })
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hex(&hasher.finalize()))
}

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

#[cfg(test)]
mod tests {
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
        // serde echoes an unknown field's name verbatim, escaped newline and all.
        let task = TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let line = format!("{{\"prompt\":\"s1 ?\",\"target\":\"s1\",\"a\\nb{}\":1}}\n", "x".repeat(1000));
        let err = read_split_strict_from(task.as_ref(), line.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("a\\nb"), "{err}");
        assert!(err.len() < 300 && err.ends_with(" ..."), "{err}");
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

//! Split files' line formats (JSONL, NTF's) both ways: examples to lines, lines to checked
//! examples, with every bad line reported in one line by its number.

use super::*;

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
pub(super) const BLANK_LINE: &str = "blank line (blank lines may only end a file)";

/// The reader behind all the others: up to `limit` non-blank lines, each parsed and checked.
pub(super) fn read_lines(
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
    let bad = |line: usize, msg: String| DataError::Line { path: path.to_path_buf(), line, msg: crate::one_line(&msg) };
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

/// Reads a split file, failing at the first bad line.
pub fn read_split_strict(task: &dyn Task, path: &Path, format: Format) -> Result<Vec<Example>, DataError> {
    read_head(task, path, format, usize::MAX)
}

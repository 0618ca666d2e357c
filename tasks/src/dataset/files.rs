//! Writing a dataset directory: both splits and the manifest under temporary names (tempfile's),
//! renamed into place only once all are complete, with their sizes and SHA-256 sums.

use super::splits::{draw_test, draw_train};
use super::*;

/// A writer that hashes and counts what goes through it.
pub(super) struct HashingWriter<W: Write> {
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

/// Writes one split file through `handle` (its staged temporary file; errors name `path`, where it
/// goes) and returns its entry (named `file`). The caller renames it into place once the whole
/// dataset is written.
pub(super) fn write_split(
    (handle, path): (File, PathBuf),
    file: &str,
    writer: &mut LineWriter<'_>,
    fill: impl FnOnce(&mut dyn FnMut(&Example) -> Result<(), DataError>) -> Result<(), DataError>,
) -> Result<SplitFile, DataError> {
    let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, handle), hasher: Sha256::new(), bytes: 0 };
    let mut examples = 0u64;
    fill(&mut |ex| {
        let line = writer.line(ex);
        out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(io_err(&path))?;
        examples += 1;
        Ok(())
    })?;
    out.flush().map_err(io_err(&path))?;
    let sha256 = hex(&out.hasher.finalize());
    Ok(SplitFile { file: file.to_string(), examples, bytes: out.bytes, sha256 })
}

/// What a dataset being written has put on disk so far; unless [`Staging::commit`] completes,
/// dropping it removes all of that (temporary files, files already renamed into place, and the
/// directories it created), so that a failed `tasks gen` leaves nothing half-made behind.
pub(super) struct Staging {
    /// Directories created for the dataset, outermost first.
    created: Vec<PathBuf>,
    /// Temporary files written so far (removed when dropped), with the names they are renamed
    /// to on commit.
    staged: Vec<(tempfile::NamedTempFile, PathBuf)>,
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

    /// A temporary file beside `name` in `dir` (tempfile's, as every file the lab writes), to be
    /// renamed to `name` on commit: a handle to write it through, and the path it will have (what
    /// errors name).
    fn stage(&mut self, dir: &Path, name: &str) -> Result<(File, PathBuf), DataError> {
        let mut builder = tempfile::Builder::new();
        // A file as the usual create makes it (0666 less the umask), not tempfile's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(io_err(&dir.join(name)))?;
        let path = dir.join(name);
        let handle = tmp.as_file().try_clone().map_err(io_err(&path))?;
        self.staged.push((tmp, path.clone()));
        Ok((handle, path))
    }

    /// Renames every staged file into place, in the order staged (the manifest last, so that a
    /// manifest never describes files that are not there).
    fn commit(mut self) -> Result<(), DataError> {
        for (tmp, path) in std::mem::take(&mut self.staged) {
            // A failed rename drops the temporary file, which removes it.
            match tmp.persist(&path) {
                Ok(_) => self.committed.push(path),
                Err(e) => return Err(DataError::Io { path, error: e.error }),
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
        // The staged temporary files remove themselves when dropped: now, before their directories.
        self.staged.clear();
        for path in &self.committed {
            let _ = std::fs::remove_file(path);
        }
        // Innermost first; a directory that holds anything else stays.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
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
        if done.is_multiple_of(4096) {
            progress(*done);
        }
    };

    let mut held_out = HashSet::new();
    let test_file = write_split(staging.stage(dir, &test_name)?, &test_name, &mut writer, |sink| {
        held_out = draw_test(task, sizes, &mut |ex| {
            tick(&mut done);
            sink(ex)
        })?;
        Ok(())
    })?;
    let train_file = write_split(staging.stage(dir, &train_name)?, &train_name, &mut writer, |sink| {
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
    let (mut handle, path) = staging.stage(dir, MANIFEST)?;
    handle.write_all(manifest.to_json().as_bytes()).map_err(io_err(&path))?;
    staging.commit()?;
    Ok(manifest)
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

//! `tasks`: generate, show and check the lab's datasets.
//!
//! ```text
//! tasks gen path-star                      # G(2,5,50), 200k train / 20k test, NTF format
//! tasks gen graph-walk --steps 8 --out d/  # any task; every parameter is a flag
//! tasks show sibling -n 3                  # a few examples, explained
//! tasks show --file d/test.jsonl           # the first lines of a data file, explained
//! tasks check d/test.jsonl                 # verify every line (and the manifest's checksum)
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tasks::dataset::{self, DataError, Format, Manifest, SplitSizes};
use tasks::spec::TaskCommand;
use tasks::{Task, TaskSpec};

#[derive(Parser)]
#[command(name = "tasks", version, about = "Generate, show and check the lab's synthetic tasks.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate train and test splits and a manifest.json into a directory.
    Gen(GenArgs),
    /// Print a few examples of a task (freshly drawn, or the first lines of --file), explained.
    Show(ShowArgs),
    /// Verify every line of a data file with its task's checks and verifier.
    Check(CheckArgs),
}

#[derive(Args)]
struct GenArgs {
    #[command(subcommand)]
    task: TaskCommand,
    /// Training examples [default: 200000; creative tasks: the published sizes].
    #[arg(long, global = true)]
    train: Option<u64>,
    /// Test examples [default: 20000; creative tasks: the published sizes].
    #[arg(long, global = true)]
    test: Option<u64>,
    /// Seed of both splits.
    #[arg(long, global = true, default_value_t = 0)]
    seed: u64,
    /// File format [default: ntf for path-star, jsonl otherwise].
    #[arg(long, global = true, value_enum)]
    format: Option<Format>,
    /// Output directory [default: data/<task>/<parameters>_seed_<seed>].
    #[arg(long, short, global = true)]
    out: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ShowArgs {
    #[command(subcommand)]
    task: Option<TaskCommand>,
    /// Show the first lines of this data file instead of fresh examples.
    #[arg(long)]
    file: Option<PathBuf>,
    /// How many examples.
    #[arg(long, short = 'n', global = true, default_value_t = 3)]
    count: usize,
    /// Seed for fresh examples.
    #[arg(long, global = true, default_value_t = 0)]
    seed: u64,
    /// Draw test prompts instead of training examples (they differ for triangle).
    #[arg(long, global = true)]
    test_split: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// The data file to check.
    file: PathBuf,
    /// The task that wrote it, when no manifest.json lies beside it and its name is not NTF's.
    #[command(subcommand)]
    task: Option<TaskCommand>,
}

/// `data/<task>/<parameters>_seed_<seed>`: NTF's stem for path-star, the parameters that differ
/// from the defaults otherwise.
fn default_dir(task: &dyn Task, seed: u64) -> PathBuf {
    let spec = task.spec();
    let slug = match task.as_path_star().map(|ps| ps.params()) {
        Some(p) => format!("{}{}", p.ntf_stem(), if p.reverse { "_reverse" } else { "" }),
        None => spec.slug(),
    };
    Path::new("data").join(spec.name()).join(format!("{slug}_seed_{seed}"))
}

fn build(spec: &TaskSpec) -> Result<Box<dyn Task>> {
    Ok(spec.build()?)
}

fn generate(args: GenArgs) -> Result<()> {
    let spec = args.task.spec();
    let task = build(&spec)?;
    let (train, test) = spec.default_sizes();
    let sizes = SplitSizes { train: args.train.unwrap_or(train), test: args.test.unwrap_or(test), seed: args.seed };
    // Path-star data is written as NTF writes it, so that NTF's scripts read it.
    let format = args.format.unwrap_or(if task.as_path_star().is_some() { Format::Ntf } else { Format::Jsonl });
    let dir = args.out.unwrap_or_else(|| default_dir(task.as_ref(), args.seed));

    let total = sizes.train + sizes.test;
    let bar = if total >= 50_000 { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("generating {}", spec.name()));
    let started = Instant::now();
    let manifest = dataset::write_dataset(task.as_ref(), sizes, format, &dir, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();

    let bytes: u64 = manifest.splits.values().map(|s| s.bytes).sum();
    println!(
        "wrote {} train + {} test {} examples ({}, seed {}) to {} in {:.2} s, {:.1} MB",
        sizes.train,
        sizes.test,
        describe(task.as_ref()),
        serde_json::to_string(&format).expect("formats serialise").trim_matches('"'),
        sizes.seed,
        dir.display(),
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    for (name, split) in &manifest.splits {
        println!("  {name:5} {}", dir.join(&split.file).display());
    }
    println!("  manifest {}", dir.join(dataset::MANIFEST).display());
    Ok(())
}

/// The task's name, with G(d,l,N) for path-star.
fn describe(task: &dyn Task) -> String {
    match task.as_path_star().map(|ps| ps.params()) {
        Some(p) => {
            format!("path-star G({},{},{}){}", p.degree, p.path_len, p.nodes, if p.reverse { " reversed" } else { "" })
        }
        None => task.spec().name().to_string(),
    }
}

/// A dataset directory's manifest and the name of the split a file is in it.
type ManifestEntry = (Manifest, String);

/// Works out which task wrote `file`: the manifest beside it, an explicit task, or NTF's name.
fn task_for_file(file: &Path, explicit: Option<&TaskCommand>) -> Result<(Box<dyn Task>, Option<ManifestEntry>)> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Some(cmd) = explicit {
        return Ok((build(&cmd.spec())?, None));
    }
    if dir.join(dataset::MANIFEST).exists() {
        let (manifest, _) = Manifest::read(dir)?;
        let task = manifest.task(&dir.join(dataset::MANIFEST))?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let split = manifest.splits.iter().find(|(_, s)| s.file == name).map(|(k, _)| k.clone());
        return Ok((task, split.map(|s| (manifest, s))));
    }
    if let Some(p) = dataset::ntf_params_from_name(file) {
        return Ok((build(&TaskSpec::PathStar(p))?, None));
    }
    bail!(
        "cannot tell which task wrote {}: no {} beside it and not an NTF file name; name the task, e.g. \
         `tasks check {} path-star --nodes 50`",
        file.display(),
        dataset::MANIFEST,
        file.display()
    )
}

fn show(args: ShowArgs, out: &mut impl Write) -> Result<()> {
    match (&args.file, &args.task) {
        (Some(file), _) => {
            let (task, split) = task_for_file(file, None)?;
            let format = split.as_ref().map(|(m, _)| m.format).unwrap_or_else(|| Format::of_path(file));
            let examples = dataset::read_head(task.as_ref(), file, format, args.count)?;
            if examples.is_empty() {
                writeln!(out, "{} holds no examples", file.display())?;
            }
            for ex in &examples {
                writeln!(out, "{}\n", task.describe(ex))?;
            }
        }
        (None, Some(cmd)) => {
            let spec = cmd.spec();
            let task = build(&spec)?;
            let mut rng = dataset::split_rng(args.seed, args.test_split);
            writeln!(out, "{} (vocabulary of {} tokens):\n", describe(task.as_ref()), task.vocab().len())?;
            for _ in 0..args.count {
                let ex = if args.test_split { task.sample_test(&mut rng) } else { task.sample(&mut rng) };
                writeln!(out, "{}\n", task.describe(&ex))?;
            }
        }
        (None, None) => {
            bail!("name a task (e.g. `tasks show path-star`) or a file (`tasks show --file FILE`)")
        }
    }
    Ok(())
}

fn check(args: CheckArgs) -> Result<bool> {
    let file = &args.file;
    if !file.is_file() {
        bail!("{}: no such file", file.display());
    }
    let (task, split) = task_for_file(file, args.task.as_ref())?;
    let format = split.as_ref().map(|(m, _)| m.format).unwrap_or_else(|| Format::of_path(file));
    let mut bad = 0usize;
    let examples = dataset::read_split(task.as_ref(), file, format, &mut |e: DataError| {
        bad += 1;
        if bad <= 10 {
            eprintln!("{e}");
        }
        true
    })?;
    let mut ok = bad == 0;
    if bad > 10 {
        eprintln!("... and {} more bad lines", bad - 10);
    }
    if let Some((manifest, name)) = &split {
        let entry = &manifest.splits[name];
        let sha = dataset::sha256_file(file)?;
        if sha != entry.sha256 {
            eprintln!(
                "{}: checksum differs from the manifest's (the file changed after it was written)",
                file.display()
            );
            ok = false;
        }
        if entry.examples != (examples.len() + bad) as u64 {
            eprintln!("{}: {} lines, the manifest says {}", file.display(), examples.len() + bad, entry.examples);
            ok = false;
        }
    }
    let what = describe(task.as_ref());
    let source = if split.is_some() { ", checksum matches the manifest" } else { "" };
    if ok {
        println!("{}: {} examples of {what}, all valid{source}", file.display(), examples.len());
    } else {
        println!("{}: {} valid and {bad} bad lines of {what}", file.display(), examples.len());
    }
    Ok(ok)
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Gen(args) => generate(args).map(|_| true),
        Cmd::Show(args) => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            show(args, &mut out).and_then(|_| out.flush().map_err(|e| anyhow!(e))).map(|_| true)
        }
        Cmd::Check(args) => check(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            // A closed pipe (`tasks show ... | head`) is not an error worth reporting.
            if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

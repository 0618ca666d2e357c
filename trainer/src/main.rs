//! `trainer train --config FILE [--set key=value]... [--out DIR]` starts a run;
//! `trainer train --resume RUN_DIR` continues one from its latest checkpoint;
//! `trainer sweep FILE [--jobs N] [--slurm]` runs (or exports) a grid of runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lab_core::run_dir::RunDir;
use lab_core::{Device, on_device};
use sha2::{Digest, Sha256};
use trainer::{RunConfig, TrainOptions};

/// mimalloc keeps freed tensor buffers for reuse (see `lab_core::alloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train lab models with competing objectives.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Backend to train on.
    #[arg(long, global = true, value_enum, default_value_t = Device::Flex)]
    device: Device,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (or continue a run with --resume).
    Train {
        /// The config file (TOML), e.g. configs/path-star/ntp.toml.
        #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
        config: Option<PathBuf>,
        /// Override a config value: --set optimizer.lr=3e-4 (repeatable). With --resume only
        /// optimizer.* and schedule.* keys (e.g. a lower learning rate after a divergence, or
        /// more steps); they are recorded in the run's config.toml and command.txt.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run directory [default: runs/<date>-<task>-<objective>-<config hash>].
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Continue this run from its latest checkpoint, with its saved config.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a sweep: a grid of runs expanded from a sweep file (see configs/sweeps/), executed
    /// by a local pool of trainer processes; finished runs are skipped and interrupted ones
    /// resumed, so a sweep can be re-run after an interruption.
    Sweep {
        /// The sweep file (TOML), e.g. configs/sweeps/pitfalls.toml.
        file: PathBuf,
        /// Runs at a time (the cores are shared among them on the CPU backend).
        #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        jobs: usize,
        /// Sweep directory [default: runs/sweeps/<name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a Slurm job-array export into <sweep dir>/slurm/ instead of running.
        #[arg(long)]
        slurm: bool,
        /// Print the runs and their status, and write the manifest, without running anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moved: the analyses are `cargo run --release -p analysis -- mi|plan|probe RUN`.
    #[command(hide = true)]
    Mi {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Moved: `cargo run --release -p analysis -- probe RUN`.
    #[command(hide = true)]
    Probe {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Today's date (UTC) as yyyy-mm-dd, from the system clock.
fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn default_run_dir(config: &RunConfig) -> PathBuf {
    let hash = Sha256::digest(config.to_toml().as_bytes());
    let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Path::new("runs").join(format!("{}-{}-{}-{short}", today(), config.task.name(), config.objective.name()))
}

fn command_line(device: Device) -> String {
    let argv: Vec<String> = std::env::args().collect();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    format!(
        "command: {}\ncommit: {commit}\ndevice: {} ({} CPU threads)\nfeatures: {}\ntrainer: {}\n",
        argv.join(" "),
        format!("{device:?}").to_lowercase(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        [
            "flex",
            #[cfg(feature = "wgpu")]
            "wgpu",
            #[cfg(feature = "cuda")]
            "cuda"
        ]
        .join(" "),
        env!("CARGO_PKG_VERSION")
    )
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.device;
    let (config, overrides, out, resume, quiet) = match cli.cmd {
        Cmd::Train { config, overrides, out, resume, quiet } => (config, overrides, out, resume, quiet),
        Cmd::Mi { .. } => bail!(
            "the analyses moved to their own binary: `cargo run --release -p analysis -- mi RUN` (the MI bound), \
             `... -- plan RUN` (what was `trainer mi RUN --counterfactual`)"
        ),
        Cmd::Probe { .. } => bail!("the probe moved: `cargo run --release -p analysis -- probe RUN`"),
        Cmd::Sweep { file, jobs, out, slurm, dry_run } => {
            return sweep(&file, jobs, out.as_deref(), slurm, dry_run, device);
        }
    };
    let (config, run, resuming, resume_overrides) = match resume {
        Some(run) => {
            let path = RunDir(&run).config();
            if !path.is_file() {
                bail!("{} is not a run directory (no config.toml)", run.display());
            }
            // What a resumed run may change: how it is optimised from here on, never what it
            // trains (task, data, model, objective, seeds).
            if let Some(bad) = overrides.iter().find(|o| !(o.starts_with("optimizer.") || o.starts_with("schedule."))) {
                bail!("--resume accepts only optimizer.* and schedule.* overrides (got --set {bad})");
            }
            (RunConfig::load(&path, &overrides)?, run, true, overrides)
        }
        None => {
            let path = config.expect("clap requires --config without --resume");
            let config = RunConfig::load(&path, &overrides)?;
            let run = out.unwrap_or_else(|| default_run_dir(&config));
            (config, run, false, Vec::new())
        }
    };
    let options = TrainOptions {
        progress: !quiet,
        stop_after: None,
        until_exact: None,
        command: command_line(device),
        resume_overrides,
    };
    println!("{} {}", if resuming { "resuming" } else { "training in" }, run.display());
    let outcome =
        on_device!(autodiff device, "trainer", |B, dev| trainer::train::<B>(&config, &run, resuming, &dev, &options))?;
    let (per_s, tokens_per_s) = outcome.throughput();
    println!(
        "{} steps of {} on {} in {:.1} s: {} sequences, {:.0} sequences/s, {:.0} tokens/s (data loading and \
         evaluation included); the training steps alone {:.0} sequences/s ({:.1} s)",
        outcome.step,
        config.objective.name(),
        config.task.name(),
        outcome.seconds,
        outcome.sequences,
        per_s,
        tokens_per_s,
        outcome.training_throughput(),
        outcome.training_seconds
    );
    if let Some(report) = &outcome.report {
        print!("{}", report.table());
    }
    println!("metrics: {}", RunDir(&run).metrics().display());
    Ok(())
}

fn sweep(file: &Path, jobs: usize, out: Option<&Path>, slurm: bool, dry_run: bool, device: Device) -> Result<()> {
    use lab_core::sweep::RunStatus;

    let mut plan = trainer::sweep::Plan::load(file, out)?;
    if device != Device::Flex {
        plan.trainer_args = vec!["--device".into(), device.name()];
    }
    let trainer = std::env::current_exe().context("locating the trainer binary")?;
    if slurm {
        let root = std::env::current_dir().context("reading the working directory")?;
        let dir = plan.write_slurm(&trainer, &root)?;
        println!(
            "{} runs in {} phase(s); submit with {}/submit.sh (each phase is an array job)",
            plan.runs.len(),
            plan.phases()?.len(),
            dir.display()
        );
        return Ok(());
    }
    if dry_run {
        let manifest = plan.prepare(&Default::default())?;
        for r in &manifest.runs {
            let after = if r.after.is_empty() { String::new() } else { format!(" (after {})", r.after.join(", ")) };
            println!(
                "{:<8} {}{after}: {} --set {}",
                format!("{:?}", r.status).to_lowercase(),
                r.name,
                r.config,
                r.overrides.join(" --set ")
            );
        }
        return Ok(());
    }
    // A closed stdout (`trainer sweep … | head`) must not panic a worker and stall the pool.
    let manifest = plan.execute(&trainer, jobs, |line| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{line}");
    })?;
    let count = |s: RunStatus| manifest.runs.iter().filter(|r| r.status == s).count();
    println!(
        "{}: {} done, {} failed, {} skipped; manifest {}; compare with `cargo run --release -p eval -- compare {}`",
        plan.name,
        count(RunStatus::Done),
        count(RunStatus::Failed),
        count(RunStatus::Skipped),
        plan.dir.join(lab_core::sweep::SWEEP_MANIFEST).display(),
        plan.dir.display()
    );
    if count(RunStatus::Failed) + count(RunStatus::Skipped) > 0 {
        bail!("some runs did not finish; their logs are beside their directories");
    }
    Ok(())
}

fn main() -> ExitCode {
    lab_core::alloc::keep_freed_memory();
    lab_core::exit_code(run(Cli::parse()))
}

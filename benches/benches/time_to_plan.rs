//! Time to plan: how many sequences, and how many seconds of training steps, a recipe needs
//! before its free-running exact match on the test split first reaches a target (0.95 by
//! default), seed by seed. Not a criterion benchmark: one measurement is a whole training run,
//! evaluated every `--every` steps and stopped at the first evaluation that reaches the target.
//!
//! ```text
//! cargo bench -p benches --bench time_to_plan                       # BST on G(2,4,10)
//! cargo bench -p benches --bench time_to_plan -- --config configs/path-star/bst.toml \
//!     --set task.path_len=3 --seeds 0,1,2 --every 250 --max-steps 6000
//! ```
//!
//! The seconds are the training steps' alone (drawing batches, forward, backward, update), the
//! figure `cost.json` records; evaluations are not counted, and they are more frequent here than
//! in a plain run. Runs go one after another, each with all the cores: a loaded machine measures
//! its load. Seeds set `seeds.model`, `seeds.data` and `data.seed`, as a sweep's seed list does.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use clap::Parser;
use trainer::{RunConfig, TrainOptions};

/// The trainer binary's allocator (trainer/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Sequences and seconds of training until free-running exact first reaches a target")]
struct Args {
    /// The recipe's config.
    #[arg(long, default_value = "configs/path-star/bst.toml")]
    config: PathBuf,
    /// Overrides, as `trainer train --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Seeds, comma-separated.
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Free-running exact match to reach.
    #[arg(long, default_value_t = 0.95)]
    target: f64,
    /// Evaluate every this many steps (the resolution of the measurement).
    #[arg(long, default_value_t = 250)]
    every: u64,
    /// Give up after this many steps [default: the config's schedule.steps]. The learning-rate
    /// schedule is the config's (over `schedule.steps`), whatever this says.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Criterion's and cargo's own flags (`--bench`), ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    lab_core::alloc::keep_freed_memory();
    let args = Args::parse();
    // `cargo bench` runs in the package's directory; configs are named from the workspace's.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).context("entering the workspace")?;
    if !(args.target > 0.0 && args.target <= 1.0) || args.every == 0 {
        bail!("--target must be in (0, 1] and --every at least 1");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "time to free-running exact >= {} ({} {}), evaluated every {} steps",
        args.target,
        args.config.display(),
        args.overrides.join(" "),
        args.every
    );
    println!("{:>5} {:>8} {:>11} {:>10} {:>10} {:>8}", "seed", "steps", "sequences", "train s", "wall s", "exact");
    let mut reached = Vec::new();
    for &seed in &args.seeds {
        let mut overrides = args.overrides.clone();
        overrides.extend([
            format!("schedule.eval_every={}", args.every),
            "schedule.checkpoint_every=0".into(),
            format!("seeds.model={seed}"),
            format!("seeds.data={seed}"),
            format!("data.seed={seed}"),
        ]);
        let config = RunConfig::load(&args.config, &overrides)?;
        let budget = config.schedule.steps;
        let stop = args.max_steps.unwrap_or(budget).min(budget);
        let options = TrainOptions {
            progress: false,
            until_exact: Some(args.target),
            stop_after: (stop < budget).then_some(stop),
            command: "cargo bench -p benches --bench time_to_plan".into(),
            ..Default::default()
        };
        let out = dir.path().join(format!("s{seed}"));
        let outcome = trainer::train::<Autodiff<Flex>>(&config, &out, false, &FlexDevice, &options)?;
        let exact = outcome.report.as_ref().map_or(f64::NAN, |r| r.free.exact);
        let ok = exact >= args.target;
        println!(
            "{seed:>5} {:>8} {:>11} {:>10.1} {:>10.1} {:>8.3}{}",
            outcome.step,
            outcome.sequences,
            outcome.training_seconds,
            outcome.seconds,
            exact,
            if ok { "" } else { "  (not reached)" }
        );
        if ok {
            reached.push((outcome.sequences, outcome.training_seconds));
        }
    }
    if reached.is_empty() {
        println!("no seed reached {}", args.target);
        return Ok(());
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
    };
    println!(
        "reached in {} of {} seeds; median {:.0}k sequences, {:.1} s of training steps on {} threads",
        reached.len(),
        args.seeds.len(),
        median(reached.iter().map(|r| r.0 as f64).collect()) / 1e3,
        median(reached.iter().map(|r| r.1).collect()),
        kernels::par::threads()
    );
    Ok(())
}

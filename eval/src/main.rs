//! `eval RUN_DIR`: evaluates a run's latest checkpoint (or `--step N`) on its test split (or
//! `--test-file F`), writes the report into `RUN_DIR/evals/` under a name that says what was
//! scored (the training's own `eval.json` is never overwritten) and prints the table.
//!
//! `--set key=value` changes the run's `[eval]` options for this evaluation, e.g.
//! `--set pass_at_k.sampling.temperature=0.7 --set diversity.samples=8`.
//!
//! `eval compare DIR` aggregates a sweep directory (or any directory of runs) into a table of
//! mean ± sd over seeds, written as `compare.md` and `compare.csv`; `eval plot DIR` draws its
//! figures into `DIR/plots/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use eval::files;
use lab_core::run_dir::{self, Direction};
use lab_core::{Device, on_device};

/// mimalloc keeps freed tensor buffers for reuse (see `lab_core::alloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "eval",
    version,
    about = "Evaluate a lab run (teacher-forced vs free-running accuracy per position, diversity, pass@k), \
             or compare the runs of a sweep.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The run directory.
    #[arg(required = true)]
    run: Option<PathBuf>,
    /// Evaluate this checkpoint instead of the latest.
    #[arg(long)]
    step: Option<u64>,
    /// Test examples to evaluate (0: all) [default: the run's `[eval] examples`].
    #[arg(long)]
    examples: Option<usize>,
    /// Replace the run's test split by this file (e.g. NTF's own test set).
    #[arg(long)]
    test_file: Option<PathBuf>,
    /// Override an `[eval]` option (repeatable): `pass_at_k.samples=128`,
    /// `diversity.sampling.temperature=1.0`, `seed=3`, ...
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Backend to evaluate on (`wgpu`, `wgpu-cpu` and `cuda` need a build with that feature).
    #[arg(long, value_enum, default_value_t = Device::Flex)]
    device: Device,
    /// Run the CPU backend's products in bf16 (`true`) or f32 (`false`) [default: the run's
    /// `model.bf16_products`, so that a re-evaluation reproduces the training's own]; the
    /// report records which.
    #[arg(long, value_name = "BOOL")]
    bf16_products: Option<bool>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Aggregate the runs of a sweep directory (or any directory of runs) into mean ± sd over
    /// seeds; writes compare.md and compare.csv into it.
    Compare {
        /// The sweep directory.
        dir: PathBuf,
        /// Group by these config keys (comma-separated, e.g. objective.kind,task.nodes)
        /// [default: the sweep's groups, i.e. run names without the seed].
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
        /// Metrics to show (comma-separated; `eval/` may be left out, e.g. free/exact,pass_at_k/64)
        /// [default: exact match, validity, the Pitfalls diagnostics, creativity and pass@k where present].
        #[arg(long, value_delimiter = ',')]
        metrics: Vec<String>,
    },
    /// Export a checkpoint's GPT as safetensors with nanoGPT's state-dict names
    /// (`transformer.h.0.attn.c_attn.weight`, ...), for `safetensors.torch.load_file`.
    Export {
        /// The run directory.
        run: PathBuf,
        /// This checkpoint instead of the latest.
        #[arg(long)]
        step: Option<u64>,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score a path-star run on perturbed test sets beside its own: edge lists reordered, one
    /// more or one fewer arm, a longer or shorter path. Prints a table and writes
    /// RUN/evals/robustness-step_N.json.
    Robustness {
        /// The run directory.
        run: PathBuf,
        /// This checkpoint instead of the latest.
        #[arg(long)]
        step: Option<u64>,
        /// Examples per test set (taken from the start of the run's test split; as many are
        /// generated for the other shapes).
        #[arg(long, default_value_t = 1000)]
        examples: usize,
        /// Seed of the reordering and of the other shapes' graphs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Backend to evaluate on.
        #[arg(long, value_enum, default_value_t = Device::Flex)]
        device: Device,
        /// bf16 (`true`) or f32 (`false`) products on the CPU backend [default: the run's].
        #[arg(long, value_name = "BOOL")]
        bf16_products: Option<bool>,
    },
    /// Draw the standard figures (training loss, accuracy per position teacher-forced vs
    /// free-running, pass@k, creativity, MI bound) of a run or sweep directory into DIR/plots/,
    /// as PNG and SVG.
    Plot {
        /// The run or sweep directory.
        dir: PathBuf,
    },
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Cmd::Compare { dir, by, metrics }) = &cli.cmd {
        let (table, md, csv) = eval::compare::compare(dir, by, metrics)?;
        print!("{}", table.markdown());
        println!("wrote {} and {}", md.display(), csv.display());
        return Ok(());
    }
    if let Some(Cmd::Export { run, step, out }) = &cli.cmd {
        let checkpoint = match step {
            Some(step) => run_dir::at_step(run, *step)?,
            None => run_dir::latest(run)?,
        };
        if checkpoint.meta.decoder != models::DecoderKind::Gpt {
            anyhow::bail!(
                "{} is decoded by its objective's own decoder ({}), which nanoGPT's layout cannot hold; its GPT's head \
                 was never trained, so an export of the GPT alone would not be the model",
                run.display(),
                checkpoint.meta.decoder.name()
            );
        }
        let model = run_dir::load_gpt::<burn::backend::Flex>(&checkpoint, &burn::backend::flex::FlexDevice)?;
        models::export::export_safetensors(&model, &checkpoint.meta.model, out)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
        println!("wrote {} (step {} of {}, nanoGPT names)", out.display(), checkpoint.step, run.display());
        return Ok(());
    }
    if let Some(Cmd::Robustness { run, step, examples, seed, device, bf16_products }) = &cli.cmd {
        let (bf16, _) = products(run, *bf16_products, *device)?;
        return robustness(run, *step, *examples, *seed, *device, bf16);
    }
    if let Some(Cmd::Plot { dir }) = &cli.cmd {
        for file in eval::plot::plot(dir)? {
            println!("wrote {}", file.display());
        }
        return Ok(());
    }
    let run = cli.run.clone().expect("clap requires a run directory without a subcommand");
    let checkpoint = match cli.step {
        Some(step) => run_dir::at_step(&run, step)?,
        None => run_dir::latest(&run)?,
    };
    let (step, meta) = (checkpoint.step, &checkpoint.meta);
    if meta.reads == Direction::Reverse {
        anyhow::bail!(
            "{} trained a right-to-left LM (objective {}): it reads sequences backwards, so forward decoding \
             does not measure it; it is a summariser for objective.kind = \"fsp-summary\"",
            run.display(),
            meta.objective
        );
    }
    if let Some(problem) = meta.health.as_ref().and_then(|h| h.problem()) {
        anyhow::bail!(
            "checkpoint step {step} of {} is not a good checkpoint: {problem}; its scores would be meaningless",
            run.display()
        );
    }
    let run_options = files::eval_options(&run, &[])?;
    let mut options = files::eval_options(&run, &cli.set)?;
    options.teacherless |= meta.teacherless;
    if let Some(n) = cli.examples {
        options.examples = n;
    }
    let mut data = meta.data.clone();
    if cli.test_file.is_some() {
        data.test_file = cli.test_file.clone();
    }
    // The training split is read only where it is needed: to tell memorized outputs of the
    // creative tasks from novel ones.
    let creative = meta.task.build()?.is_creative();
    let loaded = data.load(&meta.task, creative)?;
    if loaded.test.is_empty() {
        anyhow::bail!(
            "{} holds no test examples: nothing to score",
            cli.test_file.as_ref().map_or("the run's test split".into(), |f| f.display().to_string())
        );
    }
    let train = eval::TrainingTargets::new(loaded.task.as_ref(), &loaded.train);
    let needed = eval::needed_positions(loaded.task.as_ref(), &loaded.test);
    if let Some(limit) = meta.model.position_limit().filter(|&limit| needed > limit) {
        anyhow::bail!(
            "the test split needs {needed} positions but the model has {limit} learned ones: evaluate on data of the run's shape"
        );
    }
    let (bf16, trained_bf16) = products(&run, cli.bf16_products, cli.device)?;
    let report = on_device!(cli.device, "eval", |B, device| {
        let model = eval::decode::load_decoder::<B>(&checkpoint, &device)?;
        anyhow::Ok(eval::evaluate(&model, loaded.task.as_ref(), &loaded.test, &train, &options))
    })?;
    let total = loaded.test.len();
    let scored = files::Scored {
        test: cli.test_file.as_ref().map_or("the run's test split".into(), |f| f.display().to_string()),
        examples: options.scored(total),
        of: total,
    };
    // A re-evaluation never overwrites the training's eval.json: it gets a report of its own,
    // named after the step, the test set and (when they differ from the run's) the options.
    let mut name = files::reevaluation_name(step, cli.test_file.as_deref(), &options, &run_options);
    if bf16 != trained_bf16 {
        name.push_str(if bf16 { "-bf16" } else { "-f32" });
    }
    let file = files::EvalFile { step, scored: Some(scored.clone()), bf16_products: Some(bf16), report };
    let (json, failures) = files::write_reevaluation(&run, &name, &file)?;
    let precision = if bf16 { "bf16" } else { "f32" };
    println!(
        "{} at step {step}, {}: scored {}; {precision} products",
        run.display(),
        meta.objective,
        scored.describe()
    );
    print!("{}", file.report.table());
    println!("wrote {} and {}", json.display(), failures.display());
    Ok(())
}

/// Sets the CPU kernels' products for decoding `run`: bf16 if `flag` says so, else as the run
/// trained (`model.bf16_products`); other backends run burn's products. Returns whether they are
/// bf16, and whether the run's own evaluations were.
fn products(run: &std::path::Path, flag: Option<bool>, device: Device) -> Result<(bool, bool)> {
    let trained = files::run_bf16_products(run)?;
    let on = flag.unwrap_or(trained) && device == Device::Flex;
    kernels::set_bf16_products(on).map_err(|e| match flag {
        Some(true) => anyhow::anyhow!("--bf16-products true: {e}"),
        _ => anyhow::anyhow!(
            "{} trained with model.bf16_products = true, and its evaluations decoded so: {e}; \
             --bf16-products false evaluates in f32 (its scores may differ slightly from the training's)",
            run.display()
        ),
    })?;
    Ok((on, trained))
}

fn main() -> ExitCode {
    lab_core::alloc::keep_freed_memory();
    lab_core::exit_code(run(Cli::parse()))
}

/// `eval robustness`: see `eval::robustness`.
fn robustness(
    run: &std::path::Path,
    step: Option<u64>,
    examples: usize,
    seed: u64,
    device: Device,
    bf16: bool,
) -> Result<()> {
    let checkpoint = match step {
        Some(step) => run_dir::at_step(run, step)?,
        None => run_dir::latest(run)?,
    };
    let meta = &checkpoint.meta;
    let tasks::TaskSpec::PathStar(params) = &meta.task else {
        anyhow::bail!(
            "{} trained {}: robustness tests are defined for path-star runs",
            run.display(),
            meta.task.name()
        );
    };
    if meta.reads == Direction::Reverse || params.reverse {
        anyhow::bail!(
            "{} reads or answers right to left: robustness tests are defined for forward runs",
            run.display()
        );
    }
    if let Some(problem) = meta.health.as_ref().and_then(|h| h.problem()) {
        anyhow::bail!("checkpoint step {} of {} is not a good checkpoint: {problem}", checkpoint.step, run.display());
    }
    if examples == 0 {
        anyhow::bail!("--examples must be at least 1");
    }
    let options = files::eval_options(run, &[])?;
    let loaded = meta.data.load(&meta.task, false)?;
    let result = on_device!(device, "eval", |B, dev| {
        let model = eval::decode::load_decoder::<B>(&checkpoint, &dev)?;
        anyhow::Ok(eval::robustness::score(&model, checkpoint.step, params, &loaded.test, examples, seed, &options))
    })?;
    print!("{}", result.markdown());
    println!("({} products)", if bf16 { "bf16" } else { "f32" });
    let dir = run_dir::RunDir(run).evals();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("robustness-step_{}.json", checkpoint.step));
    run_dir::write_atomic(&file, serde_json::to_string_pretty(&result)?.as_bytes())?;
    println!("wrote {}", file.display());
    Ok(())
}

//! `eval RUN_DIR`: evaluates a run's latest checkpoint (or `--step N`) on its test split,
//! writes `eval.json` and `failures.txt` into the run directory and prints the table.
//!
//! `--set key=value` changes the run's `[eval]` options for this evaluation, e.g.
//! `--set pass_at_k.sampling.temperature=0.7 --set diversity.samples=8`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use clap::Parser;
use eval::run_dir;

#[derive(Parser)]
#[command(name = "eval", version, about = "Evaluate a lab run: teacher-forced vs free-running accuracy per position.")]
struct Cli {
    /// The run directory.
    run: PathBuf,
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
}

fn run(cli: Cli) -> Result<()> {
    let (step, stem) = match cli.step {
        Some(step) => (step, run_dir::checkpoint_stem(&cli.run, step)),
        None => run_dir::latest(&cli.run)?,
    };
    let meta = run_dir::read_meta(&stem)?;
    if meta.objective == "reverse-lm" {
        anyhow::bail!(
            "{} trained a right-to-left LM (objective reverse-lm): it reads sequences backwards, so forward decoding \
             does not measure it; it is a summariser for objective.kind = \"fsp-summary\"",
            cli.run.display()
        );
    }
    let mut options = run_dir::eval_options(&cli.run, &cli.set)?;
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
    let train = eval::TrainingTargets::new(loaded.task.as_ref(), &loaded.train);
    let needed = eval::needed_positions(loaded.task.as_ref(), &loaded.test);
    if needed > meta.model.max_seq_len {
        anyhow::bail!(
            "the test split needs {needed} positions but the model has {}: evaluate on data of the run's shape",
            meta.model.max_seq_len
        );
    }
    let device = FlexDevice;
    let model = models::checkpoint::load_model::<Flex>(&meta.model, &stem, &device)
        .with_context(|| format!("loading {}", models::checkpoint::record_path(&stem).display()))?;
    let report = eval::evaluate(&model, loaded.task.as_ref(), &loaded.test, &train, &options);
    run_dir::write_report(&cli.run, step, &report)?;
    println!("{} at step {step}, {}", cli.run.display(), meta.objective);
    print!("{}", report.table());
    println!("wrote {} and {}", cli.run.join("eval.json").display(), cli.run.join("failures.txt").display());
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

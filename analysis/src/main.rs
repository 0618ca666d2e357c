//! `analysis mi RUN` measures the MI bound per target position of a finished run;
//! `analysis plan RUN` the planning MI (path-star); `analysis probe RUN` what an fsp-bow head knows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use analysis::mi::{self, MiAnalysisOptions};
use analysis::plan::{self, PlanAnswer, PlanMiOptions};
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use lab_core::run_dir::{self, RunDir};
use lab_core::{Device, on_device};
use trainer::objective::infonce::ScorerKind;

/// mimalloc keeps freed tensor buffers for reuse (see `lab_core::alloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "analysis", version, about = "Measure what a finished run's states and heads know.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Backend to train the critics on.
    #[arg(long, global = true, value_enum, default_value_t = Device::Flex)]
    device: Device,
}

/// What every critic-based analysis takes.
#[derive(Args)]
struct CriticArgs {
    /// The run directory.
    run: PathBuf,
    /// Critic training steps (the bound is a lower bound: a critic trained longer can only find
    /// more; check that it has levelled off).
    /// [default: 1000 for mi; 2000 for plan, whose critics see d candidates a query]
    #[arg(long)]
    steps: Option<usize>,
    /// Test rows measured.
    #[arg(long, default_value_t = 1024)]
    examples: usize,
    /// The critic's AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Seed of the critic.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// The MI bound (docs/method.md, §13.4): per target position, the InfoNCE bound on I(h_t; F_t)
    /// of the run's frozen states (a fresh critic trained on its training split), and the tokens
    /// that carry its peaks; writes mi_analysis.json into the run directory.
    Mi {
        #[command(flatten)]
        critic: CriticArgs,
        /// K: rows per batch, the candidates per query (log K is the bound's ceiling).
        #[arg(long, default_value_t = 64)]
        k: usize,
        /// L: F_t pools h_(t+1..t+L).
        #[arg(long, default_value_t = 4)]
        horizon: usize,
    },
    /// The planning MI (path-star): I(h_t; y | graph) at every position, with the other arms'
    /// answers as the negatives (ceiling log d); writes mi_plan.json into the run directory.
    Plan {
        #[command(flatten)]
        critic: CriticArgs,
        /// Match every node between source and goal instead of the decision token alone (a
        /// weaker test: the goal's parent names the arm).
        #[arg(long)]
        inner_nodes: bool,
        /// The critic's score: `mlp` (a nonlinear readout of h_t, as BST's text head) or
        /// `bilinear` (a linear one, as the GPT's head).
        #[arg(long = "critic", default_value = "mlp")]
        scorer: String,
        /// Only the decision's critic (the number `eval compare` shows as plan/decision), not one
        /// per position.
        #[arg(long)]
        decision_only: bool,
    },
    /// Probe what a finished run's heads know (fsp-bow: exact bag recovery per position).
    Probe {
        /// The run directory.
        run: PathBuf,
        /// Test examples to probe.
        #[arg(long, default_value_t = 1000)]
        examples: usize,
    },
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.device;
    match cli.cmd {
        Cmd::Mi { critic: c, k, horizon } => {
            let steps = c.steps.unwrap_or(MiAnalysisOptions::default().steps);
            let options = MiAnalysisOptions {
                k,
                horizon,
                steps,
                examples: c.examples,
                lr: c.lr,
                seed: c.seed,
                ..Default::default()
            };
            let analysis = on_device!(autodiff device, "analysis", |B, dev| mi::analyse::<B>(&c.run, &options, &dev))?;
            report(&c.run, analysis.step, &analysis.table(), RunDir(&c.run).mi_analysis(), &analysis)
        }
        Cmd::Plan { critic: c, inner_nodes, scorer, decision_only } => {
            let answer = if inner_nodes { PlanAnswer::Inner } else { PlanAnswer::Decision };
            let critic = match scorer.as_str() {
                "bilinear" => ScorerKind::Bilinear,
                "mlp" => ScorerKind::Mlp,
                other => bail!("--critic {other}: use bilinear or mlp"),
            };
            let options = PlanMiOptions {
                answer,
                critic,
                steps: c.steps.unwrap_or(PlanMiOptions::default().steps),
                examples: c.examples,
                lr: c.lr,
                seed: c.seed,
                decision_only,
                ..Default::default()
            };
            let analysis =
                on_device!(autodiff device, "analysis", |B, dev| plan::analyse::<B>(&c.run, &options, &dev))?;
            report(&c.run, analysis.step, &analysis.table(), RunDir(&c.run).mi_plan(), &analysis)
        }
        Cmd::Probe { run, examples } => {
            let p = on_device!(autodiff device, "analysis", |B, dev| analysis::probe::probe_bow::<B>(
                &run, examples, &dev
            ))?;
            println!(
                "{}: bag-of-words head, exact recovery of the bag of x_(t+2..) per predicted target position",
                run.display()
            );
            for (i, (rate, n)) in p.exact.iter().zip(&p.counts).enumerate() {
                println!("  position {}: {rate:.3} ({n} examples)", i + 1);
            }
            Ok(())
        }
    }
}

/// Prints an analysis and writes it into the run directory.
fn report(run: &Path, step: u64, table: &str, path: PathBuf, analysis: &impl serde::Serialize) -> Result<()> {
    println!("{} at step {step}", run.display());
    print!("{table}");
    run_dir::write_atomic(&path, (serde_json::to_string_pretty(analysis)? + "\n").as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    lab_core::alloc::keep_freed_memory();
    lab_core::exit_code(run(Cli::parse()))
}

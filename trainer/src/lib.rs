//! Training: objectives (one file each under [`objective`]), AdamW with global-norm clipping,
//! warmup-cosine schedules counted in steps, the explicit loop, run directories with atomic
//! checkpoints and exact resume.
//!
//! A run directory holds `config.toml` (resolved: every value filled in), `command.txt`,
//! `metrics.jsonl` (one JSON object per line, keys like `train/loss` and `eval/free/pos_2`),
//! `checkpoints/step_NNNNNN.{mpk,json}` (+ `-optim.mpk`), `eval.json` and `failures.txt`.

pub mod clip;
pub mod config;
pub mod mi_analysis;
pub mod objective;
pub mod optim;
pub mod plan_mi;
pub mod probe;
pub mod sampler;
pub mod sweep;
pub mod train;

pub use config::RunConfig;
pub use train::{Outcome, TrainOptions, train};

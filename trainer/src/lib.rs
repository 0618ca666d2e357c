//! Training: objectives (one file each under [`objective`]), AdamW with global-norm clipping,
//! warmup-cosine schedules counted in steps, the explicit loop, run directories with atomic
//! checkpoints and exact resume.
//!
//! A run directory's files are named by `lab_core::run_dir::RunDir`: the resolved config, the
//! command, `metrics.jsonl` (one `MetricsLine` per line, keys like `train/loss` and
//! `eval/free/pos_2`), checkpoints, `eval.json` and `failures.txt`.

pub mod clip;
pub mod config;
pub mod objective;
pub mod optim;
pub mod sampler;
pub mod sweep;
pub mod train;

pub use config::RunConfig;
pub use train::{Outcome, TrainOptions, train};

//! Analyses of finished runs: what a trained model's states know, measured with small critics
//! trained on its frozen states, and what its objective's heads know. They read run directories
//! and write their results into them (`mi_analysis.json`, `mi_plan.json`); `eval compare` and
//! `eval plot` read those files back.
//!
//! - [`mi`]: per target position, the InfoNCE bound on I(h_t; F_t), F_t a summary of the future
//!   states, and the tokens that carry its peaks (docs/method.md, §13.4).
//! - [`plan`]: per position, the bound on I(h_t; y | graph) with the other arms' answers as
//!   negatives (path-star): whether a state knows the arm before it must emit it.
//! - [`probe`]: whether an fsp-bow run's head recovers the bag of future tokens exactly.
//!
//! Both bounds train their critic through one loop ([`critic::train`]). The crate links the
//! trainer for the objectives' definitions it reads back (a run's config, the fsp-bow head, the
//! future encoder and the InfoNCE scorer); the trainer does not link it.

pub mod critic;
pub mod mi;
pub mod plan;
pub mod probe;

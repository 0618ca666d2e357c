//! Teacher-forced and free-running evaluation, diagnostics and reports.
//!
//! Empty until the training-loop issue lands; it scores free-running outputs with the verifiers
//! of the `tasks` crate and never links the trainer.

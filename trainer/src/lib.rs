//! Objectives, optimizer and schedules, the explicit training loop, run directories.
//!
//! Empty until the training-loop issue lands; see ARCHITECTURE.md for what it will own.

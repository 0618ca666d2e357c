//! End-to-end tests live in `tests/`; this library only gives them a home crate.

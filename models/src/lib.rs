//! The lab's models: a nanoGPT-style decoder and the heads that objectives need, generic over
//! burn's `Backend`.
//!
//! Empty until the training-loop issue lands; the crate exists now so that the workspace layout
//! (and its invariants, see ARCHITECTURE.md) is fixed from the start. It will know nothing of
//! objectives: it returns logits and hidden states, and the trainer decides what to do with them.

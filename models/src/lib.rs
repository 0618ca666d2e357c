//! The lab's models: a nanoGPT-style decoder ([`gpt`]) that returns hidden states as well as
//! logits, with key/value-cached incremental decoding, generic over burn's `Backend`.
//!
//! The crate knows nothing of objectives: it maps tokens to logits and hidden states, and the
//! trainer decides what to do with them (extra heads that objectives need live beside the GPT
//! and take its hidden states as input).

pub mod belief;
pub mod checkpoint;
pub mod export;
pub mod gpt;

pub use belief::{BeliefDecoder, BeliefHead, BeliefHeadConfig, Decoder, DecoderKind};
pub use gpt::{Block, Gpt, GptConfig, GptOutput, GptSuffix, KvCache, Positions, linear_rows, norm, seeded, transfer};

//! Frozen models that objectives read (the reverse LM of `fsp-summary`, the critic of `avatarl`,
//! a frozen copy of the LM for the future encoder of `mi`): the latest checkpoint of another
//! lab run, loaded onto the inner (non-autodiff) backend so that no gradient can reach it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use lab_core::run_dir::{self, Direction};
use models::{Gpt, GptConfig};

/// Which runs may serve, by the way their model reads (the sidecar's `reads`).
#[derive(Clone, Copy, Debug)]
pub enum Serves {
    /// A right-to-left LM (a run of objective `reverse-lm`).
    ReverseLm,
    /// Any left-to-right LM (every objective but `reverse-lm`).
    ForwardLm,
}

/// Loads the latest checkpoint of `run`, named by the config key `key`, checking that it was
/// trained the way `serves` asks and fits a forward model of shape `forward` (same vocabulary,
/// at least as many positions).
pub fn load_frozen<B: Backend>(
    run: &Path,
    key: &str,
    serves: Serves,
    forward: &GptConfig,
    device: &B::Device,
) -> Result<Gpt<B>> {
    let checkpoint =
        run_dir::latest(run).with_context(|| format!("{key} = {}: no trained model there", run.display()))?;
    let meta = &checkpoint.meta;
    match (serves, meta.reads) {
        (Serves::ReverseLm, Direction::Forward) => bail!(
            "{key} = {} reads left to right (objective {:?}); a right-to-left LM (objective \"reverse-lm\") is needed",
            run.display(),
            meta.objective
        ),
        (Serves::ForwardLm, Direction::Reverse) => bail!(
            "{key} = {} is a right-to-left LM (objective {}); a left-to-right one is needed",
            run.display(),
            meta.objective
        ),
        _ => {}
    }
    if meta.decoder != models::DecoderKind::Gpt {
        bail!(
            "{key} = {} is decoded by its objective's own decoder ({}): its GPT's head was never trained",
            run.display(),
            meta.decoder.name()
        );
    }
    let too_short = meta.model.position_limit().is_some_and(|limit| limit < forward.max_seq_len);
    if meta.model.vocab_size != forward.vocab_size || too_short {
        bail!(
            "the model in {} has vocabulary {} and {} positions; this run needs {} and {}",
            run.display(),
            meta.model.vocab_size,
            meta.model.max_seq_len,
            forward.vocab_size,
            forward.max_seq_len
        );
    }
    run_dir::load_gpt::<B>(&checkpoint, device).with_context(|| format!("loading {key}"))
}

//! Frozen models that objectives read (the reverse LM of `fsp-summary`, the critic of `avatarl`,
//! a frozen copy of the LM for the future encoder of `mi`): the latest checkpoint of another
//! lab run, loaded onto the inner (non-autodiff) backend so that no gradient can reach it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use eval::run_dir;
use models::{Gpt, GptConfig};

/// Which runs may serve.
#[derive(Clone, Copy, Debug)]
pub enum Serves {
    /// Only runs of this objective.
    Objective(&'static str),
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
    let (_, stem) =
        run_dir::latest(run).with_context(|| format!("{key} = {}: no trained model there", run.display()))?;
    let meta = run_dir::read_meta(&stem)?;
    match serves {
        Serves::Objective(want) if meta.objective != want => {
            bail!("{key} = {} was trained with objective {:?}, not {want:?}", run.display(), meta.objective)
        }
        Serves::ForwardLm if meta.objective == "reverse-lm" => {
            bail!(
                "{key} = {} is a right-to-left LM (objective reverse-lm); a left-to-right one is needed",
                run.display()
            )
        }
        _ => {}
    }
    if meta.model.vocab_size != forward.vocab_size || meta.model.max_seq_len < forward.max_seq_len {
        bail!(
            "the model in {} has vocabulary {} and {} positions; this run needs {} and {}",
            run.display(),
            meta.model.vocab_size,
            meta.model.max_seq_len,
            forward.vocab_size,
            forward.max_seq_len
        );
    }
    models::checkpoint::load_model::<B>(&meta.model, &stem, device)
        .with_context(|| format!("loading {key} from {}", stem.display()))
}

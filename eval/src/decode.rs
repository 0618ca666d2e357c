//! Decoding: teacher-forced (one pass over the true sequence), teacherless (one pass over the
//! prompt and `$` inputs), and free-running with the KV cache, greedy or sampled.

use anyhow::Result;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use lab_core::run_dir::{self, Checkpoint, Part};
use models::{BeliefDecoder, BeliefHeadConfig, Decoder, DecoderKind};
use rand_chacha::ChaCha8Rng;

use crate::sample::Sampling;

/// What decodes the checkpoint: its GPT, through the decoder its sidecar names (an objective that
/// decodes otherwise, BST, stores its decoder as the checkpoint's `decoder` part).
pub fn load_decoder<B: Backend>(checkpoint: &Checkpoint, device: &B::Device) -> Result<Decoder<B>> {
    let gpt = run_dir::load_gpt::<B>(checkpoint, device)?;
    Ok(match checkpoint.meta.decoder {
        DecoderKind::Gpt => Decoder::Gpt(gpt),
        DecoderKind::BeliefState => {
            let d = checkpoint.meta.model.d_model;
            let shell = BeliefDecoder::new(
                BeliefHeadConfig::new(d, checkpoint.meta.model.vocab_size).init(device),
                Tensor::zeros([d], device),
            );
            let record = run_dir::load_part::<B, _>(checkpoint, Part::Decoder, device)?;
            Decoder::BeliefState(gpt, shell.load_record(record))
        }
    })
}

fn argmax_rows<B: Backend>(logits: Tensor<B, 3>) -> (Vec<i64>, usize) {
    let [_, t, _] = logits.dims();
    let ids = logits.argmax(2).into_data().convert::<i64>().to_vec::<i64>().expect("argmax gives ints");
    (ids, t)
}

/// Each row's predicted target tokens when every input is the true token.
pub fn teacher_forced<B: Backend>(model: &Decoder<B>, batch: &Batch<B>) -> Vec<Vec<u32>> {
    targets_from_logits(model.logits(batch.inputs.clone()), batch)
}

/// Each row's predicted target tokens when the target inputs are all `$`.
pub fn teacherless<B: Backend>(model: &Decoder<B>, batch: &Batch<B>, dummy: u32) -> Vec<Vec<u32>> {
    targets_from_logits(model.logits(batch.teacherless(dummy)), batch)
}

fn targets_from_logits<B: Backend>(logits: Tensor<B, 3>, batch: &Batch<B>) -> Vec<Vec<u32>> {
    let (ids, t) = argmax_rows(logits);
    batch
        .prefix_lens
        .iter()
        .zip(&batch.target_lens)
        .enumerate()
        .map(|(r, (&p, &len))| (0..len).map(|i| ids[r * t + p - 1 + i] as u32).collect())
        .collect()
}

/// Greedy decoding of up to `max_len` tokens after prompts of equal length, with the KV cache.
/// A row stops at `eos` (kept in its output).
pub fn greedy<B: Backend>(
    model: &Decoder<B>,
    prompts: &[&[u32]],
    max_len: usize,
    eos: Option<u32>,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    generate(model, prompts, max_len, eos, &Sampling::greedy(), &mut [], device)
}

/// Free-running decoding of up to `max_len` tokens after prompts of equal length, with the KV
/// cache, each row drawing its tokens from `sampling` with its own generator (`rngs[r]` for row
/// `r`, one draw per generated token). Greedy sampling takes the argmax on the device and needs
/// no generators. A row stops at `eos` (kept in its output).
pub fn generate<B: Backend>(
    model: &Decoder<B>,
    prompts: &[&[u32]],
    max_len: usize,
    eos: Option<u32>,
    sampling: &Sampling,
    rngs: &mut [ChaCha8Rng],
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let (b, p) = (prompts.len(), prompts[0].len());
    assert!(sampling.is_greedy() || rngs.len() == b, "one generator per row");
    debug_assert!(prompts.iter().all(|x| x.len() == p));
    let flat: Vec<i32> = prompts.iter().flat_map(|x| x.iter().map(|&t| t as i32)).collect();
    let mut cache = model.new_cache();
    let mut logits =
        model.logits_cached(Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, p]), device), &mut cache);
    let mut outputs = vec![Vec::with_capacity(max_len); b];
    let mut done = vec![false; b];
    for step in 0..max_len {
        let [_, t, v] = logits.dims();
        let last = logits.slice([0..b, t - 1..t]).reshape([b, v]);
        let ids: Vec<i64> = if sampling.is_greedy() {
            last.argmax(1).into_data().convert::<i64>().to_vec::<i64>().expect("argmax gives ints")
        } else {
            // Sampling happens on the host: a row's draws then depend neither on the backend
            // nor on the batch the row shares.
            let host = last.into_data().convert::<f32>().to_vec::<f32>().expect("logits are floats");
            host.chunks(v).zip(rngs.iter_mut()).map(|(row, rng)| sampling.choose(row, rng) as i64).collect()
        };
        record(&ids, &mut outputs, &mut done, eos);
        if step + 1 == max_len || done.iter().all(|&d| d) {
            break;
        }
        let next: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
        logits = model.logits_cached(Tensor::<B, 2, Int>::from_data(TensorData::new(next, [b, 1]), device), &mut cache);
    }
    outputs
}

/// Appends each unfinished row's new token; a row finishes on `eos`.
fn record(ids: &[i64], outputs: &mut [Vec<u32>], done: &mut [bool], eos: Option<u32>) {
    for ((&id, out), done) in ids.iter().zip(outputs).zip(done) {
        if !*done {
            out.push(id as u32);
            *done = eos == Some(id as u32);
        }
    }
}

/// Greedy decoding by full recomputation: the whole sequence goes through the model for every
/// new token. The reference that [`greedy`] must match, and the baseline of the decoding
/// benchmark.
pub fn greedy_uncached<B: Backend>(
    model: &Decoder<B>,
    prompts: &[&[u32]],
    max_len: usize,
    eos: Option<u32>,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let b = prompts.len();
    let mut seqs: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut outputs = vec![Vec::with_capacity(max_len); b];
    let mut done = vec![false; b];
    for _ in 0..max_len {
        let t = seqs[0].len();
        let flat: Vec<i32> = seqs.iter().flat_map(|s| s.iter().map(|&x| x as i32)).collect();
        let logits = model.logits(Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, t]), device));
        let ids = logits.slice([0..b, t - 1..t]).argmax(2).into_data().convert::<i64>().to_vec::<i64>().expect("ints");
        for (seq, &id) in seqs.iter_mut().zip(&ids) {
            seq.push(id as u32);
        }
        record(&ids, &mut outputs, &mut done, eos);
        if done.iter().all(|&d| d) {
            break;
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use models::GptConfig;

    use super::*;

    #[test]
    fn cached_and_recomputed_greedy_decoding_give_the_same_tokens() {
        // A random model has no preference worth learning, so its greedy choices are a fair test
        // of the two decoders' agreement (ties aside, which random logits do not produce).
        let model = Decoder::Gpt(GptConfig::tiny(20, 24).init_seeded::<Flex>(4, &FlexDevice));
        let prompts: Vec<Vec<u32>> = (0..6).map(|r| (0..8).map(|i| (r * 7 + i * 3) % 20).collect()).collect();
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let cached = greedy(&model, &refs, 12, None, &FlexDevice);
        let full = greedy_uncached(&model, &refs, 12, None, &FlexDevice);
        assert_eq!(cached, full);
        assert!(cached.iter().all(|o| o.len() == 12));
        // With an end token, rows stop there and keep it.
        let eos = cached[0][0];
        let stopped = greedy(&model, &refs, 12, Some(eos), &FlexDevice);
        let expected: Vec<Vec<u32>> = cached
            .iter()
            .map(|row| match row.iter().position(|&t| t == eos) {
                Some(i) => row[..=i].to_vec(),
                None => row.clone(),
            })
            .collect();
        assert_eq!(stopped, expected);
        assert_eq!(stopped, greedy_uncached(&model, &refs, 12, Some(eos), &FlexDevice));
    }

    #[test]
    fn sampled_generation_is_seeded_and_does_not_depend_on_the_batch() {
        use crate::sample::{Purpose, stream};

        let model = Decoder::Gpt(GptConfig::tiny(20, 24).init_seeded::<Flex>(5, &FlexDevice));
        let prompts: Vec<Vec<u32>> = (0..6).map(|r| (0..8).map(|i| (r * 5 + i * 7) % 20).collect()).collect();
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let s = Sampling::with_temperature(1.0);
        let rngs = |seed, rows: std::ops::Range<usize>| -> Vec<ChaCha8Rng> {
            rows.map(|r| stream(seed, Purpose::PassAtK, r, 0)).collect()
        };
        let all = generate(&model, &refs, 12, None, &s, &mut rngs(3, 0..6), &FlexDevice);
        assert_eq!(all, generate(&model, &refs, 12, None, &s, &mut rngs(3, 0..6), &FlexDevice));
        // Rows decoded in other batches, with their own streams, draw the same tokens.
        let mut split = generate(&model, &refs[..2], 12, None, &s, &mut rngs(3, 0..2), &FlexDevice);
        split.extend(generate(&model, &refs[2..], 12, None, &s, &mut rngs(3, 2..6), &FlexDevice));
        assert_eq!(all, split);
        // Another seed, other samples; a random model's near-flat distribution makes them differ.
        assert_ne!(all, generate(&model, &refs, 12, None, &s, &mut rngs(4, 0..6), &FlexDevice));
        // Top-1 sampling at any temperature is greedy decoding.
        let top1 = Sampling { top_k: 1, ..Sampling::with_temperature(2.0) };
        assert_eq!(
            generate(&model, &refs, 12, None, &top1, &mut rngs(3, 0..6), &FlexDevice),
            greedy(&model, &refs, 12, None, &FlexDevice)
        );
    }
}

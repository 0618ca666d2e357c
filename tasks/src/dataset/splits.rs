//! Drawing the splits: the test split from ChaCha8 stream 1, the training split from stream 0
//! minus every test instance (see the module docs of [`super`]).

use super::*;

/// Requested sizes and seed of a dataset.
#[derive(Clone, Copy, Debug)]
pub struct SplitSizes {
    /// Training examples.
    pub train: u64,
    /// Test examples.
    pub test: u64,
    /// Seed of both splits.
    pub seed: u64,
}

/// The random stream of a split, so that the streams never overlap.
pub fn split_rng(seed: u64, test: bool) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(if test { 1 } else { 0 });
    rng
}

/// Draws the test split then the training split in memory (see the module docs). For large
/// datasets prefer [`write_dataset`], which streams the training split to disk.
pub fn generate(task: &dyn Task, sizes: SplitSizes) -> Result<(Vec<Example>, Vec<Example>), DataError> {
    let mut test = Vec::with_capacity(sizes.test as usize);
    let mut train = Vec::with_capacity(sizes.train as usize);
    let held_out = draw_test(task, sizes, &mut |ex| {
        test.push(ex.clone());
        Ok(())
    })?;
    draw_train(task, sizes, &held_out, &mut |ex| {
        train.push(ex.clone());
        Ok(())
    })?;
    Ok((train, test))
}

pub(super) fn draw_test(
    task: &dyn Task,
    sizes: SplitSizes,
    sink: &mut dyn FnMut(&Example) -> Result<(), DataError>,
) -> Result<HashSet<Vec<u32>>, DataError> {
    let mut rng = split_rng(sizes.seed, true);
    let mut keys = HashSet::with_capacity(sizes.test as usize);
    for _ in 0..sizes.test {
        let ex = task.sample_test(&mut rng);
        keys.insert(task.instance_key(&ex));
        sink(&ex)?;
    }
    Ok(keys)
}

pub(super) fn draw_train(
    task: &dyn Task,
    sizes: SplitSizes,
    held_out: &HashSet<Vec<u32>>,
    sink: &mut dyn FnMut(&Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut rng = split_rng(sizes.seed, false);
    // Rejection must not spin forever when the test split holds most of a small instance space.
    let max_rejections = 10_000 + 20 * sizes.train;
    let mut rejected = 0u64;
    let mut kept = 0u64;
    while kept < sizes.train {
        let ex = task.sample(&mut rng);
        if !held_out.is_empty() && held_out.contains(&task.instance_key(&ex)) {
            rejected += 1;
            if rejected > max_rejections {
                return Err(DataError::Other(format!(
                    "the task has too few distinct instances for {} test and {} training examples: \
                     {rejected} of {} training draws were test instances; ask for fewer test examples \
                     or a larger task",
                    sizes.test,
                    sizes.train,
                    rejected + kept
                )));
            }
            continue;
        }
        kept += 1;
        sink(&ex)?;
    }
    Ok(())
}

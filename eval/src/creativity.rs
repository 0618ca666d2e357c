//! Diversity and creativity of free-running outputs on the creative tasks, as Nagarajan et al.
//! (2025) define them (REFERENCES §2):
//!
//! - a generation is **coherent** when the task's verifier accepts it;
//! - it is **memorized** when its canonical form (edge order, direction and rotation removed)
//!   equals the canonical form of a training target;
//! - **creativity** = |unique(coherent ∧ not memorized)| / #generations, where unique counts
//!   distinct canonical forms across the whole evaluation;
//! - **diversity** = |unique(coherent)| / #generations (the same without the memorization filter).
//!
//! With the published protocol (greedy decoding, one generation per hash-conditioned test
//! prompt) #generations is the number of test prompts, as in the paper's formula; with M sampled
//! generations per prompt every generation counts as one prompt.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

/// The canonical forms of a training split's targets: what a memorized output reproduces.
#[derive(Clone, Debug, Default)]
pub struct TrainingTargets {
    canonical: HashSet<Vec<u32>>,
}

impl TrainingTargets {
    /// Collects the canonical forms of `train`'s targets (nothing for tasks without canonical
    /// forms, whose outputs are never called memorized).
    pub fn new(task: &dyn Task, train: &[Example]) -> TrainingTargets {
        TrainingTargets { canonical: train.iter().filter_map(|e| task.canonical(e.target())).collect() }
    }

    /// Distinct canonical training targets.
    pub fn len(&self) -> usize {
        self.canonical.len()
    }

    /// Whether no training target has a canonical form.
    pub fn is_empty(&self) -> bool {
        self.canonical.is_empty()
    }

    fn contains(&self, canonical: &[u32]) -> bool {
        self.canonical.contains(canonical)
    }
}

/// Diversity and creativity of a set of generations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Test prompts (hashes) generated from.
    pub prompts: usize,
    /// Generations per prompt.
    pub samples_per_prompt: usize,
    /// How tokens were drawn (`greedy`, or temperature, top-k, top-p).
    pub sampling: String,
    /// Share of generations the task's verifier accepts.
    pub coherent: f64,
    /// Share of generations that are coherent and reproduce a training target (memorized
    /// outputs are coherent by construction, since training targets are).
    pub memorized: f64,
    /// Share of coherent generations that are memorized (0 when none is coherent).
    pub memorized_of_coherent: f64,
    /// |unique(coherent ∧ not memorized)| / #generations.
    pub creativity: f64,
    /// |unique(coherent)| / #generations.
    pub diversity: f64,
}

/// Scores `generations` (grouped by prompt: `generations[i]` holds prompt `i`'s samples).
pub fn diversity(
    task: &dyn Task,
    prompts: &[&[u32]],
    generations: &[Vec<Vec<u32>>],
    train: &TrainingTargets,
    sampling: String,
) -> Diversity {
    let mut total = 0usize;
    let (mut coherent, mut memorized) = (0usize, 0usize);
    let mut unique: HashSet<Vec<u32>> = HashSet::new();
    let mut novel: HashSet<Vec<u32>> = HashSet::new();
    for (prompt, samples) in prompts.iter().zip(generations) {
        for output in samples {
            total += 1;
            if !task.verify(prompt, output).is_valid() {
                continue;
            }
            coherent += 1;
            let canonical = task.canonical(output).unwrap_or_else(|| output.clone());
            if train.contains(&canonical) {
                memorized += 1;
            } else {
                novel.insert(canonical.clone());
            }
            unique.insert(canonical);
        }
    }
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Diversity {
        prompts: prompts.len(),
        samples_per_prompt: generations.first().map_or(0, Vec::len),
        sampling,
        coherent: share(coherent, total),
        memorized: share(memorized, total),
        memorized_of_coherent: share(memorized, coherent),
        creativity: share(novel.len(), total),
        diversity: share(unique.len(), total),
    }
}

#[cfg(test)]
mod tests {
    use tasks::creative::{Creative, CreativeKind, CreativeParams, SiblingParams};

    use super::*;

    #[test]
    fn sibling_by_hand() {
        // 2 parents with 3 children per set, hash off: b1_0..b1_2 and b2_0..b2_2 are a0's
        // children, b1_3..b1_5 and b2_3..b2_5 are a1's.
        let task = Creative::sibling(SiblingParams { parents: 2, children: 3, hash_len: 0 }).unwrap();
        let enc = |s: &str| task.vocab().encode(s).unwrap();
        let prompt = enc("<q>");
        let train: Vec<Example> = ["b1_0 b2_0 a0 </a>", "b1_3 b2_4 a1 </a>"]
            .iter()
            .map(|t| Example { tokens: [prompt.clone(), enc(t)].concat(), prefix_len: 1 })
            .collect();
        let memory = TrainingTargets::new(&task, &train);
        assert_eq!(memory.len(), 2);
        // Five prompts, one generation each.
        let gens: Vec<Vec<Vec<u32>>> = [
            "b1_0 b2_0 a0 </a>", // memorized
            "b1_1 b2_2 a0 </a>", // novel
            "b1_1 b2_2 a0 </a>", // the same novel output again: a duplicate
            "b1_4 b2_5 a1 </a>", // novel
            "b1_0 b2_4 a0 </a>", // incoherent: b2_4 is a1's child
        ]
        .iter()
        .map(|t| vec![enc(t)])
        .collect();
        let prompts = vec![prompt.as_slice(); 5];
        let d = diversity(&task, &prompts, &gens, &memory, "greedy".into());
        assert_eq!((d.prompts, d.samples_per_prompt), (5, 1));
        assert_eq!(d.coherent, 4.0 / 5.0);
        assert_eq!(d.memorized, 1.0 / 5.0);
        assert_eq!(d.memorized_of_coherent, 1.0 / 4.0);
        // Unique coherent: {memorized, novel 1, novel 2}; unique novel: {novel 1, novel 2}.
        assert_eq!(d.diversity, 3.0 / 5.0);
        assert_eq!(d.creativity, 2.0 / 5.0);
    }

    #[test]
    fn construction_outputs_are_compared_in_canonical_form() {
        // A circle over 4 of 5 entities; the same cycle written from another start, in the other
        // direction and with its edges shuffled is the same output, and memorized.
        let task = Creative::construction(CreativeKind::Circle, CreativeParams { entities: 5, nodes: 4, hash_len: 0 })
            .unwrap();
        let v = task.vocab();
        let enc = |s: &str| v.encode(s).unwrap();
        let prompt = enc("<q>");
        let target = enc("n0 n1 <sep> n1 n2 <sep> n2 n3 <sep> n3 n0 </a>");
        let train = vec![Example { tokens: [prompt.clone(), target].concat(), prefix_len: 1 }];
        let memory = TrainingTargets::new(&task, &train);
        let gens = vec![vec![
            enc("n2 n1 <sep> n0 n3 <sep> n1 n0 <sep> n3 n2 </a>"), // the training cycle, rewritten
            enc("n0 n2 <sep> n2 n1 <sep> n1 n3 <sep> n3 n0 </a>"), // another cycle: novel
            enc("n0 n1 <sep> n1 n2 <sep> n2 n0 </a>"),             // three edges: incoherent
            enc("n4 n1 <sep> n1 n2 <sep> n2 n3 <sep> n3 n4 </a>"), // novel
        ]];
        let d = diversity(&task, &[prompt.as_slice()], &gens, &memory, "temperature 1".into());
        assert_eq!((d.prompts, d.samples_per_prompt), (1, 4));
        assert_eq!((d.coherent, d.memorized), (0.75, 0.25));
        assert_eq!((d.creativity, d.diversity), (0.5, 0.75));
    }
}

//! Path-star graphs G(d, l, N): the minimal planning task of Bachmann & Nagarajan (2024),
//! "The Pitfalls of Next-Token Prediction", generated and written exactly as their official code
//! (Next-Token-Failures, "NTF") does.
//!
//! A source node has `d` arms of `l - 1` edges each over distinct nodes drawn from `0..N`; one
//! arm ends at the goal. The prompt lists the edges in random order, then the source and goal;
//! the target is the path from source to goal (goal to source with `reverse`), source included,
//! so the first real decision is target position 2 (1-based). An NTF line:
//!
//! ```text
//! 32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12
//! ```
//!
//! and its tokens (NTF's numeral tokenizer: node `i` is token `i`, `|` = N, `=` = N+1,
//! `/` = N+2, `$` = N+3, commas dropped; 27 prompt tokens and 5 target tokens for G(2,5,50)):
//!
//! ```text
//! prompt  32 3 | 16 12 | 3 19 | 32 34 | 34 6 | 6 16 | 19 47 | 47 28 / 32 12 =
//! target  32 34 6 16 12
//! ```
//!
//! Under teacher forcing every node after the source has a unique child in the graph, so a
//! model can predict positions 3.. by looking up the previous *true* node (the Clever-Hans
//! cheat) and never learns to choose the right arm at position 2.

use std::fmt::Write as _;

use petgraph::graphmap::DiGraphMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::spec::{SpecError, TaskSpec};
use crate::vocab::{DUMMY, Vocab, numerals_then};
use crate::{Example, Task, Verdict};

/// Parameters of a path-star task G(d, l, N) (also the flags of `tasks gen path-star`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct PathStarParams {
    /// Degree of the source, d: the number of arms (at least 1).
    #[arg(long, short = 'd', default_value_t = PathStarParams::default().degree)]
    pub degree: u32,
    /// Nodes on each arm counting source and goal, l (at least 2); each arm has l - 1 edges.
    #[arg(long, short = 'l', default_value_t = PathStarParams::default().path_len)]
    pub path_len: u32,
    /// Size of the node id space, N: nodes are `0..N`, and N >= d(l-1)+1 so that all nodes of
    /// a graph can be distinct.
    #[arg(long, short = 'N', default_value_t = PathStarParams::default().nodes)]
    pub nodes: u32,
    /// Write the target from goal to source (the easy direction of the paper).
    #[serde(default)]
    #[arg(long)]
    pub reverse: bool,
}

impl Default for PathStarParams {
    /// G(2, 5, 50), the paper's headline setting.
    fn default() -> Self {
        PathStarParams { degree: 2, path_len: 5, nodes: 50, reverse: false }
    }
}

/// The largest node id space the lab accepts; the vocabulary has N + 4 entries.
pub const MAX_NODES: u32 = 1 << 20;

impl PathStarParams {
    /// Rejects parameters for which NTF would loop forever or produce no task.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |msg: String| Err(SpecError::Invalid { task: "path-star", msg });
        if self.degree == 0 {
            return bad("degree must be at least 1".into());
        }
        if self.path_len < 2 {
            return bad(format!("path length must be at least 2 (source and goal), got {}", self.path_len));
        }
        if self.nodes > MAX_NODES {
            return bad(format!("nodes = {} exceeds the limit of {MAX_NODES}", self.nodes));
        }
        let needed = self.degree as u64 * (self.path_len as u64 - 1) + 1;
        if (self.nodes as u64) < needed {
            return bad(format!(
                "G({}, {}, {}) needs at least d(l-1)+1 = {needed} nodes, got {} \
                 (NTF's generator would loop forever here)",
                self.degree, self.path_len, self.nodes, self.nodes
            ));
        }
        Ok(())
    }

    /// Number of edges, d(l-1).
    pub fn edges(&self) -> usize {
        self.degree as usize * (self.path_len as usize - 1)
    }

    /// Prompt length in tokens: 2 per edge, `|` between edges, `/`, source, goal, `=`.
    pub fn prefix_len(&self) -> usize {
        let e = self.edges();
        2 * e + (e - 1) + 4
    }

    /// NTF's file name stem, e.g. `deg_2_path_5_nodes_50`.
    pub fn ntf_stem(&self) -> String {
        format!("deg_{}_path_{}_nodes_{}", self.degree, self.path_len, self.nodes)
    }
}

/// A path-star task; see the module documentation.
pub struct PathStar {
    params: PathStarParams,
    spec: TaskSpec,
    vocab: Vocab,
}

/// The special tokens of NTF's numeral tokenizer, as ids.
#[derive(Clone, Copy, Debug)]
struct Symbols {
    bar: u32,
    eq: u32,
    slash: u32,
}

/// A path-star instance read back from a prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Edges in prompt order, pointing away from the source.
    pub edges: Vec<(u32, u32)>,
    /// The source node.
    pub source: u32,
    /// The goal node.
    pub goal: u32,
}

impl Instance {
    /// The graph as petgraph sees it.
    pub fn graph(&self) -> DiGraphMap<u32, ()> {
        DiGraphMap::from_edges(self.edges.iter().copied())
    }

    /// The unique child of `node` (every node but the source has at most one), if any. The
    /// Clever-Hans diagnostic asks whether a model predicts exactly this.
    pub fn child(&self, node: u32) -> Option<u32> {
        self.edges.iter().find(|e| e.0 == node).map(|e| e.1)
    }

    /// The path from source to goal following parent links, or `None` if the goal is not
    /// reachable from the source.
    pub fn path(&self) -> Option<Vec<u32>> {
        let mut path = vec![self.goal];
        let mut node = self.goal;
        while node != self.source {
            node = self.edges.iter().find(|e| e.1 == node)?.0;
            if path.len() > self.edges.len() {
                return None; // a cycle; path-star graphs have none
            }
            path.push(node);
        }
        path.reverse();
        Some(path)
    }
}

impl PathStar {
    /// Builds the task; fails on parameters that admit no graph.
    pub fn new(params: PathStarParams) -> Result<PathStar, SpecError> {
        params.validate()?;
        let vocab = numerals_then(params.nodes, &["|", "=", "/", DUMMY]);
        let spec = TaskSpec::PathStar(params.clone());
        Ok(PathStar { params, spec, vocab })
    }

    /// The task's parameters.
    pub fn params(&self) -> &PathStarParams {
        &self.params
    }

    fn symbols(&self) -> Symbols {
        let n = self.params.nodes;
        Symbols { bar: n, eq: n + 1, slash: n + 2 }
    }

    /// Draws a graph: node ids for source, path and arms are a uniformly random ordered sample
    /// of distinct ids (the same distribution as NTF's rejection loops), and the edge list is
    /// shuffled. Returns the edges (path edges first before the shuffle) and the path.
    pub fn sample_instance(&self, rng: &mut ChaCha8Rng) -> (Instance, Vec<u32>) {
        let d = self.params.degree as usize;
        let l = self.params.path_len as usize;
        let n = self.params.nodes;
        let k = d * (l - 1) + 1;

        let ids = partial_shuffle(rng, n, k);
        let source = ids[0];
        let path = ids[..l].to_vec();
        let goal = path[l - 1];

        let mut edges = Vec::with_capacity(d * (l - 1));
        edges.extend(path.windows(2).map(|w| (w[0], w[1])));
        for arm in 1..d {
            let start = l + (arm - 1) * (l - 1);
            let mut prev = source;
            for &node in &ids[start..start + l - 1] {
                edges.push((prev, node));
                prev = node;
            }
        }
        for i in (1..edges.len()).rev() {
            let j = rng.random_range(0..=i as u32) as usize;
            edges.swap(i, j);
        }
        (Instance { edges, source, goal }, path)
    }

    /// Reads the graph, source and goal back from prompt tokens; the error says what is wrong.
    pub fn parse_prompt(&self, prefix: &[u32]) -> Result<Instance, String> {
        let s = self.symbols();
        let want = self.params.prefix_len();
        if prefix.len() != want {
            return Err(format!("expected {want} prompt tokens, found {}", prefix.len()));
        }
        let is_node = |t: u32| t < self.params.nodes;
        let e = self.params.edges();
        let mut edges = Vec::with_capacity(e);
        for i in 0..e {
            let at = 3 * i;
            let (u, v) = (prefix[at], prefix[at + 1]);
            if !is_node(u) || !is_node(v) {
                return Err(format!("edge {} is not a pair of nodes", i + 1));
            }
            let sep = prefix[at + 2];
            let want_sep = if i + 1 < e { s.bar } else { s.slash };
            if sep != want_sep {
                return Err(format!("edge {} is not followed by `{}`", i + 1, if i + 1 < e { "|" } else { "/" }));
            }
            edges.push((u, v));
        }
        let (source, goal, eq) = (prefix[3 * e], prefix[3 * e + 1], prefix[3 * e + 2]);
        if !is_node(source) || !is_node(goal) || eq != s.eq {
            return Err("expected `/source,goal=` after the edges".into());
        }
        Ok(Instance { edges, source, goal })
    }

    /// Checks that an instance is a path-star graph G(d, l, N): the source has d arms, each a
    /// chain of l - 1 edges over distinct nodes, and the goal ends one of them.
    fn check_instance(&self, inst: &Instance) -> Result<(), String> {
        let d = self.params.degree as usize;
        let l = self.params.path_len as usize;
        if inst.source == inst.goal {
            return Err("source and goal are the same node".into());
        }
        let g = inst.graph();
        if g.edge_count() != inst.edges.len() {
            return Err("an edge is listed twice".into());
        }
        if g.neighbors_directed(inst.source, petgraph::Incoming).next().is_some() {
            return Err(format!("an edge points into the source {}", inst.source));
        }
        let arms: Vec<u32> = g.neighbors(inst.source).collect();
        if arms.len() != d {
            return Err(format!("source {} has {} arms, expected {d}", inst.source, arms.len()));
        }
        let mut goal_seen = false;
        for first in arms {
            let mut node = first;
            for step in 1..l {
                if g.neighbors_directed(node, petgraph::Incoming).count() != 1 {
                    return Err(format!("node {node} has more than one parent"));
                }
                let children: Vec<u32> = g.neighbors(node).collect();
                let last = step == l - 1;
                match (children.as_slice(), last) {
                    ([], true) => {}
                    ([next], false) => node = *next,
                    _ => {
                        return Err(format!("the arm through {first} is not a chain of {} edges", l - 1));
                    }
                }
            }
            goal_seen |= node == inst.goal;
        }
        if !goal_seen {
            return Err(format!("goal {} does not end an arm", inst.goal));
        }
        Ok(())
    }

    /// The same graph, with its edges in the same order, asked once for each of its d goals:
    /// the example itself first, then the other arms' leaves in the order their edges appear.
    /// Frydenlund's "structured samples" put these side by side in one batch, so that the
    /// prompt's graph cannot tell the arms apart and only the goal token can; the MI analysis
    /// reads them as the counterfactual futures of one graph. Errors on a malformed prompt.
    pub fn with_goals(&self, example: &Example) -> Result<Vec<Example>, String> {
        let inst = self.parse_prompt(example.prefix())?;
        let leaves = inst.edges.iter().map(|e| e.1).filter(|&v| inst.child(v).is_none());
        let mut goals = vec![inst.goal];
        goals.extend(leaves.filter(|&v| v != inst.goal));
        let s = self.symbols();
        let e = self.params.edges();
        goals
            .into_iter()
            .map(|goal| {
                let mut path = Instance { goal, ..inst.clone() }.path().ok_or("a leaf is not reachable")?;
                if self.params.reverse {
                    path.reverse();
                }
                let mut tokens = example.prefix().to_vec();
                tokens[3 * e + 1] = goal;
                debug_assert_eq!(tokens[3 * e + 2], s.eq);
                tokens.extend_from_slice(&path);
                Ok(Example { tokens, prefix_len: example.prefix_len })
            })
            .collect()
    }

    /// Formats an example as an NTF line (no newline).
    pub fn to_ntf_line(&self, example: &Example, out: &mut String) {
        let s = self.symbols();
        for &t in example.prefix() {
            match t {
                t if t == s.bar => out.push('|'),
                t if t == s.slash => out.push('/'),
                t if t == s.eq => out.push('='),
                t => {
                    // Two nodes in a row are separated by a comma in NTF's format.
                    if out.as_bytes().last().is_some_and(u8::is_ascii_digit) {
                        out.push(',');
                    }
                    push_u32(out, t);
                }
            }
        }
        for (i, &t) in example.target().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_u32(out, t);
        }
    }

    /// A line of another graph than this task's (a test file of another rung) is refused with
    /// both shapes named, rather than with whichever token first fails to parse: its edges and
    /// path give its degree and path length, its largest node a lower bound on its node count.
    /// Only a line whose edges and path make a whole graph of another shape counts; a damaged
    /// line (a node lost or doubled) gets the parser's own message, which names the fault.
    fn check_ntf_shape(&self, graph: &str, path: &str) -> Result<(), String> {
        let p = &self.params;
        let edges = graph.split('|').count();
        let len = path.split(',').count();
        let same = edges == p.edges() && len == p.path_len as usize;
        let a_graph = len > 1 && edges.is_multiple_of(len - 1);
        if same || !a_graph {
            return Ok(());
        }
        let largest = graph.split(['|', ',']).chain(path.split(',')).filter_map(|t| t.trim().parse::<u64>().ok()).max();
        let nodes = largest.map_or("?".into(), |m| format!("at least {}", m + 1));
        Err(format!(
            "this line is a G({},{len},n) graph with {nodes} nodes ({edges} edges, a path of {len} nodes), \
             but the task is G({},{},{}) (degree {}, path length {}, {} nodes): a test file of another graph",
            edges / (len - 1),
            p.degree,
            p.path_len,
            p.nodes,
            p.degree,
            p.path_len,
            p.nodes
        ))
    }

    /// Parses an NTF line into an example and checks it. Errors name the offending part; the
    /// caller adds the line number.
    pub fn parse_ntf_line(&self, line: &str) -> Result<Example, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (graph, rest) = line.split_once('/').ok_or("missing `/` before source,goal")?;
        let (ends, path) = rest.split_once('=').ok_or("missing `=` before the path")?;
        self.check_ntf_shape(graph, path)?;
        let s = self.symbols();
        let node = |text: &str| -> Result<u32, String> {
            let v: u32 = text.trim().parse().map_err(|_| format!("{text:?} is not a node number"))?;
            if v >= self.params.nodes {
                return Err(format!("node {v} is outside 0..{}", self.params.nodes));
            }
            Ok(v)
        };
        let mut tokens = Vec::with_capacity(self.params.prefix_len() + self.params.path_len as usize);
        for (i, edge) in graph.split('|').enumerate() {
            if i > 0 {
                tokens.push(s.bar);
            }
            let (u, v) = edge.split_once(',').ok_or_else(|| format!("edge {:?} is not `u,v`", edge))?;
            tokens.push(node(u)?);
            tokens.push(node(v)?);
        }
        let (src, goal) = ends.split_once(',').ok_or("source,goal is not `u,v`")?;
        tokens.extend([s.slash, node(src)?, node(goal)?, s.eq]);
        let prefix_len = tokens.len();
        for p in path.split(',') {
            tokens.push(node(p)?);
        }
        let example = Example { tokens, prefix_len };
        self.check(&example)?;
        Ok(example)
    }
}

/// The first `k` entries of a Fisher-Yates shuffle of `0..n`: a uniform ordered sample of `k`
/// distinct ids. For large `n` the shuffled array is virtual (only displaced entries are stored),
/// which gives the same ids from the same random draws without touching `n` entries.
pub(crate) fn partial_shuffle(rng: &mut ChaCha8Rng, n: u32, k: usize) -> Vec<u32> {
    if n <= 4096 {
        let mut ids: Vec<u32> = (0..n).collect();
        for i in 0..k {
            let j = rng.random_range(i as u32..n) as usize;
            ids.swap(i, j);
        }
        ids.truncate(k);
        return ids;
    }
    let mut moved: std::collections::HashMap<u32, u32> = std::collections::HashMap::with_capacity(2 * k);
    let mut ids = Vec::with_capacity(k);
    for i in 0..k as u32 {
        let j = rng.random_range(i..n);
        let at_j = moved.get(&j).copied().unwrap_or(j);
        let at_i = moved.get(&i).copied().unwrap_or(i);
        moved.insert(j, at_i);
        ids.push(at_j);
    }
    ids
}

fn push_u32(out: &mut String, v: u32) {
    let _ = write!(out, "{v}");
}

impl Task for PathStar {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Example {
        let (inst, mut path) = self.sample_instance(rng);
        let s = self.symbols();
        let mut tokens = Vec::with_capacity(self.params.prefix_len() + path.len());
        for (i, &(u, v)) in inst.edges.iter().enumerate() {
            if i > 0 {
                tokens.push(s.bar);
            }
            tokens.push(u);
            tokens.push(v);
        }
        tokens.extend([s.slash, inst.source, inst.goal, s.eq]);
        let prefix_len = tokens.len();
        if self.params.reverse {
            path.reverse();
        }
        tokens.extend_from_slice(&path);
        Example { tokens, prefix_len }
    }

    fn max_target_len(&self) -> usize {
        self.params.path_len as usize
    }

    fn as_path_star(&self) -> Option<&PathStar> {
        Some(self)
    }

    fn counterfactual_targets(&self, example: &Example) -> Option<Vec<Vec<u32>>> {
        // The other goals' answers to the same graph: paths down the other arms, same length.
        let all = self.with_goals(example).ok()?;
        Some(all[1..].iter().map(|e| e.target().to_vec()).collect())
    }

    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict {
        let inst = match self.parse_prompt(prefix) {
            Ok(i) => i,
            Err(e) => return Verdict::Invalid(format!("bad prompt: {e}")),
        };
        let l = self.params.path_len as usize;
        if output.len() != l {
            return Verdict::Invalid(format!("{} nodes, expected {l}", output.len()));
        }
        // Read a reversed target back to front: the rule is the same.
        let path: Vec<u32> = if self.params.reverse { output.iter().rev().copied().collect() } else { output.to_vec() };
        if path[0] != inst.source {
            return Verdict::Invalid(format!("starts at {}, not at the source {}", path[0], inst.source));
        }
        let g = inst.graph();
        for w in path.windows(2) {
            if !g.contains_edge(w[0], w[1]) {
                return Verdict::Invalid(format!("{} -> {} is not an edge", w[0], w[1]));
            }
        }
        if path[l - 1] != inst.goal {
            return Verdict::Invalid(format!("ends at {}, not at the goal {}", path[l - 1], inst.goal));
        }
        Verdict::Valid
    }

    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String> {
        let inst = self.parse_prompt(prefix)?;
        self.check_instance(&inst)
    }

    fn instance_key(&self, example: &Example) -> Vec<u32> {
        // The same graph with its edges listed in another order is the same problem.
        let e = self.params.edges();
        let mut edges: Vec<(u32, u32)> = (0..e).map(|i| (example.tokens[3 * i], example.tokens[3 * i + 1])).collect();
        edges.sort_unstable();
        let mut key: Vec<u32> = edges.into_iter().flat_map(|(u, v)| [u, v]).collect();
        key.extend_from_slice(&example.tokens[3 * e + 1..3 * e + 3]);
        key
    }

    fn describe(&self, example: &Example) -> String {
        let mut out = String::new();
        self.to_ntf_line(example, &mut out);
        let Ok(inst) = self.parse_prompt(example.prefix()) else {
            return out;
        };
        let _ = write!(out, "\n  source {} -> goal {}", inst.source, inst.goal);
        let g = inst.graph();
        for first in g.neighbors(inst.source) {
            let mut arm = vec![inst.source, first];
            while let Some(c) = inst.child(*arm.last().unwrap()) {
                arm.push(c);
            }
            let names: Vec<String> = arm.iter().map(u32::to_string).collect();
            let tag = if arm.last() == Some(&inst.goal) { "  (to the goal)" } else { "" };
            let _ = write!(out, "\n  arm {}{tag}", names.join(" -> "));
        }
        if let Some(path) = inst.path() {
            let _ = write!(out, "\n  decision (target position 2): {}", path[1]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The sample line of REFERENCES §1, the first line of NTF's G(2,5,50) test file.
    const NTF_LINE: &str = "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12";

    fn g250() -> PathStar {
        PathStar::new(PathStarParams::default()).unwrap()
    }

    #[test]
    fn parses_the_reference_line_into_ntf_tokens() {
        let t = g250();
        let ex = t.parse_ntf_line(NTF_LINE).unwrap();
        assert_eq!(ex.prefix_len, 27);
        assert_eq!(ex.target(), &[32, 34, 6, 16, 12]);
        // `|` = N = 50, `/` = 52, `=` = 51.
        assert_eq!(&ex.prefix()[..6], &[32, 3, 50, 16, 12, 50]);
        assert_eq!(&ex.prefix()[23..], &[52, 32, 12, 51]);
        assert_eq!(t.vocab().len(), 54);
        assert_eq!(t.vocab().dummy(), 53);
        let mut back = String::new();
        t.to_ntf_line(&ex, &mut back);
        assert_eq!(back, NTF_LINE);
    }

    #[test]
    fn a_line_of_another_graph_names_both_shapes() {
        let g2410 =
            PathStar::new(PathStarParams { degree: 2, path_len: 4, nodes: 10, ..PathStarParams::default() }).unwrap();
        let e = g2410.parse_ntf_line(NTF_LINE).unwrap_err();
        assert!(e.contains("G(2,5,n) graph with at least 48 nodes") && e.contains("the task is G(2,4,10)"), "{e}");
        // The right shape but nodes beyond the task's: the parser names the node.
        let g2540 = PathStar::new(PathStarParams { nodes: 40, ..PathStarParams::default() }).unwrap();
        let e = g2540.parse_ntf_line(NTF_LINE).unwrap_err();
        assert!(e.contains("node 47 is outside 0..40"), "{e}");
        // A damaged line (a path node doubled: 8 edges, 6 path nodes) is no graph of another
        // shape: the parser's own message.
        let e = g250().parse_ntf_line(&NTF_LINE.replace("=32,34", "=32,32,34")).unwrap_err();
        assert!(!e.contains("graph with"), "{e}");
        let degree5 = "9,32|4,46|25,37|10,25|0,43|10,9|10,7|10,0|10,4|7,48/10,32=10,9,32";
        let e = g250().parse_ntf_line(degree5).unwrap_err();
        assert!(e.contains("G(5,3,n)") && e.contains("the task is G(2,5,50)"), "{e}");
    }

    #[test]
    fn with_goals_asks_the_same_graph_for_every_leaf() {
        let t = g250();
        let ex = t.parse_ntf_line(NTF_LINE).unwrap();
        let all = t.with_goals(&ex).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], ex, "the example itself comes first");
        let mut other = String::new();
        t.to_ntf_line(&all[1], &mut other);
        assert_eq!(other, "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,28=32,3,19,47,28");
        for e in &all {
            t.check(e).unwrap();
        }
        // Degree 5: five different goals, each example valid, the prompts alike but for the goal.
        let t5 = PathStar::new(PathStarParams { degree: 5, ..PathStarParams::default() }).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let ex = t5.sample(&mut rng);
        let all = t5.with_goals(&ex).unwrap();
        let goals: std::collections::BTreeSet<u32> = all.iter().map(|e| e.target()[4]).collect();
        assert_eq!(goals.len(), 5);
        for e in &all {
            t5.check(e).unwrap();
            assert_eq!(e.tokens[..3 * 20 + 1], ex.tokens[..3 * 20 + 1]);
        }
        // The counterfactual futures: the other four arms' paths, answers to other goals.
        let alt = t5.counterfactual_targets(&ex).unwrap();
        assert_eq!(alt.len(), 4);
        for (a, e) in alt.iter().zip(&all[1..]) {
            assert_eq!(a, e.target());
            assert!(!t5.verify(ex.prefix(), a).is_valid(), "a counterfactual is a wrong answer to the prompt");
        }
    }

    #[test]
    fn rejects_malformed_lines_with_a_reason() {
        let t = g250();
        for (line, why) in [
            ("32,3|16,12", "missing `/`"),
            ("32,3|16,12/32,12", "missing `=`"),
            ("32,3|16,x|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12", "not a node number"),
            ("32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,99/32,12=32,34,6,16,12", "outside 0..50"),
            ("32,3|16,12|3,19|32,34|34,6|6,16|19,47/32,12=32,34,6,16,12", "prompt tokens"),
            ("32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,3,19,47,28", "target"),
            ("32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,16/32,12=32,34,6,16,12", "parent"),
        ] {
            let err = t.parse_ntf_line(line).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn generated_examples_are_path_stars_that_verify() {
        for params in [
            PathStarParams::default(),
            PathStarParams { degree: 5, path_len: 3, nodes: 11, reverse: false },
            PathStarParams { degree: 1, path_len: 2, nodes: 2, reverse: true },
        ] {
            let t = PathStar::new(params).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for _ in 0..200 {
                let ex = t.sample(&mut rng);
                t.check(&ex).unwrap();
                let mut line = String::new();
                t.to_ntf_line(&ex, &mut line);
                assert_eq!(t.parse_ntf_line(&line).unwrap(), ex);
            }
        }
    }

    #[test]
    fn verifier_rejects_wrong_arm_and_reads_reversed_targets() {
        let t = g250();
        let ex = t.parse_ntf_line(NTF_LINE).unwrap();
        assert!(t.verify(ex.prefix(), &[32, 3, 19, 47, 28]).to_string().contains("ends at 28"));
        assert!(!t.verify(ex.prefix(), &[32, 34, 6, 16]).is_valid());
        let rev = PathStar::new(PathStarParams { reverse: true, ..Default::default() }).unwrap();
        assert!(rev.verify(ex.prefix(), &[12, 16, 6, 34, 32]).is_valid());
        assert!(!rev.verify(ex.prefix(), &[32, 34, 6, 16, 12]).is_valid());
    }

    #[test]
    fn virtual_shuffle_draws_the_same_ids_as_the_dense_one() {
        // Both branches consume the same draws; compare the sparse one against a dense shuffle
        // written out here.
        let (n, k) = (10_000u32, 40usize);
        let sparse = partial_shuffle(&mut ChaCha8Rng::seed_from_u64(9), n, k);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut ids: Vec<u32> = (0..n).collect();
        for i in 0..k {
            let j = rng.random_range(i as u32..n) as usize;
            ids.swap(i, j);
        }
        assert_eq!(sparse, ids[..k]);
        let mut distinct = sparse.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), k);
    }

    #[test]
    fn rejects_impossible_parameters() {
        for (d, l, n) in [(0, 5, 50), (2, 1, 50), (2, 5, 8), (20, 5, 50)] {
            let p = PathStarParams { degree: d, path_len: l, nodes: n, reverse: false };
            assert!(PathStar::new(p).is_err(), "G({d},{l},{n})");
        }
        assert!(PathStar::new(PathStarParams { degree: 20, path_len: 5, nodes: 81, reverse: false }).is_ok());
    }
}

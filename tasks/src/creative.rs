//! The creative tasks of Nagarajan, Wu, Ding & Raghunathan (ICML 2025), "Roll the dice & look
//! before you leap": outputs must be coherent (obey the task's rule) and should be novel (not a
//! training target) and diverse. With hash conditioning every prompt starts with a random
//! 10-character hash, one token per character, and decoding is greedy: diversity comes from the
//! hash.
//!
//! | task | prompt | target (one example) | coherent when |
//! |---|---|---|---|
//! | sibling | `#k #3 ... #q <q>` | `b1_12 b2_47 a0 </a>` | both children belong to the parent |
//! | triangle | `#k ... #q tri:` | `n5 n77 <sep> n77 n9 <sep> n9 n5 </a>` | all three edges are in the world graph |
//! | (triangle, training only) | `edge:` | `n5 n77 <sep> n77 n5 </a>` | |
//! | circle | `#k ... #q <q>` | `n3 n8 <sep> n0 n5 <sep> ... </a>` | the edges form one cycle over `nodes` entities |
//! | line | `#k ... #q <q>` | `n3 n8 <sep> n0 n5 <sep> ... </a>` | the edges form one path over `nodes` entities |
//!
//! Canonical forms (for memorization) ignore what carries no meaning: the order of edges, the
//! direction of an undirected edge, and where a cycle starts. The published code compares raw
//! strings instead, so it counts a reordered copy of a training circle as novel; the lab does not.

use std::fmt::Write as _;

use petgraph::graphmap::UnGraphMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::spec::{SpecError, TaskSpec};
use crate::vocab::{DUMMY, Vocab};
use crate::{Example, Task, Verdict};

/// The characters of a hash, as in the published code: lowercase letters and digits.
const HASH_CHARS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn default_hash_len() -> u32 {
    10
}

/// Parameters of sibling discovery (also the flags of `tasks gen sibling`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct SiblingParams {
    /// Number of parents `a0..`.
    #[arg(long, default_value_t = SiblingParams::default().parents)]
    pub parents: u32,
    /// Children per parent in each of the two child sets (`b1_*` and `b2_*`).
    #[arg(long, default_value_t = SiblingParams::default().children)]
    pub children: u32,
    /// Hash characters at the start of each prompt; 0 turns hash conditioning off.
    #[serde(default = "default_hash_len")]
    #[arg(long, default_value_t = default_hash_len())]
    pub hash_len: u32,
}

impl Default for SiblingParams {
    /// The published `sibling.5.500` setting.
    fn default() -> Self {
        SiblingParams { parents: 5, children: 500, hash_len: 10 }
    }
}

/// Parameters of triangle discovery. The world graph is built as in the published notebook:
/// every node first gets `degree` random neighbours (among nodes whose degree is at most
/// `alpha * degree`), then each node closes up to `triangles_per_node` triangles between pairs of
/// its neighbours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct TriangleParams {
    /// Nodes of the world graph `n0..`.
    #[arg(long, default_value_t = TriangleParams::default().nodes)]
    pub nodes: u32,
    /// Random neighbours each node gets in the first phase (D).
    #[arg(long, default_value_t = TriangleParams::default().degree)]
    pub degree: u32,
    /// A node accepts random neighbours while its degree is at most alpha * D.
    #[arg(long, default_value_t = TriangleParams::default().alpha)]
    pub alpha: f64,
    /// Triangles each node tries to close in the second phase (T).
    #[arg(long, default_value_t = TriangleParams::default().triangles_per_node)]
    pub triangles_per_node: u32,
    /// Share of training examples that are triangles; the rest are `edge:` samples that teach
    /// the graph.
    #[arg(long, default_value_t = TriangleParams::default().triangle_fraction)]
    pub triangle_fraction: f64,
    /// Seed of the world graph (independent of the data seed, so that train and test files of
    /// different sizes share one world).
    #[arg(long, default_value_t = TriangleParams::default().world_seed)]
    pub world_seed: u64,
    /// Hash characters at the start of each triangle prompt; 0 turns hash conditioning off.
    #[serde(default = "default_hash_len")]
    #[arg(long, default_value_t = default_hash_len())]
    pub hash_len: u32,
}

impl Default for TriangleParams {
    /// The published setting: 999 nodes, D = 3, alpha = 1.2, T = 6, a third triangles.
    fn default() -> Self {
        TriangleParams {
            nodes: 999,
            degree: 3,
            alpha: 1.2,
            triangles_per_node: 6,
            triangle_fraction: 1.0 / 3.0,
            world_seed: 0,
            hash_len: 10,
        }
    }
}

/// Parameters of circle and line construction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreativeParams {
    /// Entities `n0..` to build from.
    pub entities: u32,
    /// Entities used by one construction (a circle over 9 of 10, a line over all 10).
    pub nodes: u32,
    /// Hash characters at the start of each prompt; 0 turns hash conditioning off.
    #[serde(default = "default_hash_len")]
    pub hash_len: u32,
}

impl CreativeParams {
    /// The published circle setting: 9 of 10 entities.
    pub fn circle() -> Self {
        CreativeParams { entities: 10, nodes: 9, hash_len: 10 }
    }

    /// The published line setting (`line.10.9.10`): all 10 entities, 9 edges.
    pub fn line() -> Self {
        CreativeParams { entities: 10, nodes: 10, hash_len: 10 }
    }
}

/// The flags of `tasks gen circle`: [`CreativeParams`] with the published circle setting as
/// defaults.
///
/// Circle and line have a flag type each because their defaults differ. (One type generic over
/// the default would not do: clap keeps a `default_value_t` in a static, which all the type's
/// instances share, so both subcommands would show and use the first one's default.)
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct CircleArgs {
    /// Entities to build from.
    #[arg(long, default_value_t = CreativeParams::circle().entities)]
    pub entities: u32,
    /// Entities one circle goes through.
    #[arg(long, default_value_t = CreativeParams::circle().nodes)]
    pub nodes: u32,
    /// Hash characters per prompt; 0 turns hash conditioning off.
    #[arg(long, default_value_t = CreativeParams::circle().hash_len)]
    pub hash_len: u32,
}

/// The flags of `tasks gen line`: [`CreativeParams`] with the published line setting as
/// defaults (see [`CircleArgs`] for why the two are separate types).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct LineArgs {
    /// Entities to build from.
    #[arg(long, default_value_t = CreativeParams::line().entities)]
    pub entities: u32,
    /// Entities one line goes through.
    #[arg(long, default_value_t = CreativeParams::line().nodes)]
    pub nodes: u32,
    /// Hash characters per prompt; 0 turns hash conditioning off.
    #[arg(long, default_value_t = CreativeParams::line().hash_len)]
    pub hash_len: u32,
}

impl From<CircleArgs> for CreativeParams {
    fn from(a: CircleArgs) -> CreativeParams {
        CreativeParams { entities: a.entities, nodes: a.nodes, hash_len: a.hash_len }
    }
}

impl From<LineArgs> for CreativeParams {
    fn from(a: LineArgs) -> CreativeParams {
        CreativeParams { entities: a.entities, nodes: a.nodes, hash_len: a.hash_len }
    }
}

/// Which creative task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreativeKind {
    /// Sibling discovery.
    Sibling,
    /// Triangle discovery.
    Triangle,
    /// Circle construction.
    Circle,
    /// Line construction.
    Line,
}

/// Marker tokens shared by the creative tasks.
#[derive(Clone, Copy, Debug)]
struct Markers {
    q: u32,
    sep: u32,
    end: u32,
    tri: u32,
    edge: u32,
    hash0: u32,
}

/// One of the creative tasks; see the module docs.
pub struct Creative {
    kind: CreativeKind,
    spec: TaskSpec,
    vocab: Vocab,
    m: Markers,
    hash_len: u32,
    /// Entity tokens are `0..entities` (for sibling: parents, then b1, then b2 children).
    entities: u32,
    /// Sibling: parents and children per set.
    sibling: Option<(u32, u32)>,
    /// Triangle: the world graph and the share of triangle samples.
    world: Option<(UnGraphMap<u32, ()>, f64)>,
    /// Circle and line: entities per construction.
    nodes: u32,
}

impl Creative {
    fn build(
        kind: CreativeKind,
        spec: TaskSpec,
        entity_names: Vec<String>,
        hash_len: u32,
    ) -> Result<Creative, SpecError> {
        if hash_len > 64 {
            return Err(SpecError::Invalid { task: spec.name(), msg: "hash_len must be at most 64".into() });
        }
        let entities = entity_names.len() as u32;
        let mut names = entity_names;
        names.extend(["<q>", "<sep>", "</a>", "tri:", "edge:", DUMMY].map(String::from));
        let hash0 = names.len() as u32;
        names.extend(HASH_CHARS.iter().map(|&c| format!("#{}", c as char)));
        let m =
            Markers { q: entities, sep: entities + 1, end: entities + 2, tri: entities + 3, edge: entities + 4, hash0 };
        Ok(Creative {
            kind,
            spec,
            vocab: Vocab::new(names),
            m,
            hash_len,
            entities,
            sibling: None,
            world: None,
            nodes: 0,
        })
    }

    /// Sibling discovery.
    pub fn sibling(p: SiblingParams) -> Result<Creative, SpecError> {
        let bad = |msg: &str| SpecError::Invalid { task: "sibling", msg: msg.into() };
        if p.parents == 0 || p.children == 0 {
            return Err(bad("parents and children must be at least 1"));
        }
        if p.parents as u64 * (1 + 2 * p.children as u64) > 1 << 20 {
            return Err(bad("parents * (1 + 2 * children) must be at most 2^20 tokens"));
        }
        let (a, c) = (p.parents, p.children);
        let mut names: Vec<String> = (0..a).map(|i| format!("a{i}")).collect();
        names.extend((0..a * c).map(|i| format!("b1_{i}")));
        names.extend((0..a * c).map(|i| format!("b2_{i}")));
        let mut t = Creative::build(CreativeKind::Sibling, TaskSpec::Sibling(p.clone()), names, p.hash_len)?;
        t.sibling = Some((a, c));
        Ok(t)
    }

    /// Triangle discovery; builds the world graph from `world_seed`.
    pub fn triangle(p: TriangleParams) -> Result<Creative, SpecError> {
        let bad = |msg: String| SpecError::Invalid { task: "triangle", msg };
        if !(3..=1 << 20).contains(&p.nodes) {
            return Err(bad("nodes must be in 3..=2^20".into()));
        }
        if p.degree == 0 || p.degree >= p.nodes || p.alpha.is_nan() || p.alpha < 1.0 {
            return Err(bad("need 1 <= degree < nodes and alpha >= 1".into()));
        }
        if !(0.0..=1.0).contains(&p.triangle_fraction) {
            return Err(bad("triangle_fraction must be in [0, 1]".into()));
        }
        let world = triangle_world(&p);
        if count_triangles(&world) == 0 {
            return Err(bad("the world graph has no triangle; raise degree or triangles_per_node".into()));
        }
        let names = (0..p.nodes).map(|i| format!("n{i}")).collect();
        let mut t = Creative::build(CreativeKind::Triangle, TaskSpec::Triangle(p.clone()), names, p.hash_len)?;
        t.world = Some((world, p.triangle_fraction));
        Ok(t)
    }

    /// Circle or line construction.
    pub fn construction(kind: CreativeKind, p: CreativeParams) -> Result<Creative, SpecError> {
        let (spec, min) = match kind {
            CreativeKind::Circle => (TaskSpec::Circle(p.clone()), 3),
            CreativeKind::Line => (TaskSpec::Line(p.clone()), 2),
            _ => unreachable!("construction() builds circles and lines"),
        };
        if p.nodes < min || p.nodes > p.entities || p.entities > 4096 {
            let msg =
                format!("need {min} <= nodes <= entities <= 4096, got nodes {} and entities {}", p.nodes, p.entities);
            return Err(SpecError::Invalid { task: spec.name(), msg });
        }
        let names = (0..p.entities).map(|i| format!("n{i}")).collect();
        let mut t = Creative::build(kind, spec, names, p.hash_len)?;
        t.nodes = p.nodes;
        Ok(t)
    }

    /// Which creative task this is.
    pub fn kind(&self) -> CreativeKind {
        self.kind
    }

    /// The world graph of triangle discovery.
    pub fn world(&self) -> Option<&UnGraphMap<u32, ()>> {
        self.world.as_ref().map(|w| &w.0)
    }

    fn push_hash(&self, rng: &mut ChaCha8Rng, tokens: &mut Vec<u32>) {
        tokens.extend((0..self.hash_len).map(|_| self.m.hash0 + rng.random_range(0..HASH_CHARS.len() as u32)));
    }

    fn push_edges(&self, edges: &[(u32, u32)], tokens: &mut Vec<u32>) {
        for (i, &(u, v)) in edges.iter().enumerate() {
            if i > 0 {
                tokens.push(self.m.sep);
            }
            tokens.extend([u, v]);
        }
        tokens.push(self.m.end);
    }

    fn sample_triangle(&self, rng: &mut ChaCha8Rng, tokens: &mut Vec<u32>) {
        let g = self.world().expect("triangle task has a world");
        // As published: a random node, two of its neighbours, kept if they are adjacent. The
        // world has triangles (checked at build), so this ends.
        loop {
            let u = rng.random_range(0..self.entities);
            let nb: Vec<u32> = g.neighbors(u).collect();
            if nb.len() < 2 {
                continue;
            }
            let (i, j) = two_distinct(rng, nb.len());
            let (v, w) = (nb[i], nb[j]);
            if g.contains_edge(v, w) {
                self.push_edges(&[(u, v), (v, w), (w, u)], tokens);
                return;
            }
        }
    }

    fn sample_with(&self, rng: &mut ChaCha8Rng, test: bool) -> Example {
        let mut tokens = Vec::with_capacity(self.hash_len as usize + 40);
        match self.kind {
            CreativeKind::Sibling => {
                let (a, c) = self.sibling.expect("sibling task has its sizes");
                self.push_hash(rng, &mut tokens);
                tokens.push(self.m.q);
                let parent = rng.random_range(0..a);
                let b1 = a + parent * c + rng.random_range(0..c);
                let b2 = a + a * c + parent * c + rng.random_range(0..c);
                let prefix_len = tokens.len();
                tokens.extend([b1, b2, parent, self.m.end]);
                return Example { tokens, prefix_len };
            }
            CreativeKind::Triangle => {
                let (g, fraction) = self.world.as_ref().expect("triangle task has a world");
                if test || rng.random::<f64>() < *fraction {
                    self.push_hash(rng, &mut tokens);
                    tokens.push(self.m.tri);
                    let prefix_len = tokens.len();
                    self.sample_triangle(rng, &mut tokens);
                    return Example { tokens, prefix_len };
                }
                // Edge samples carry no hash, as published: they teach the graph, not creativity.
                tokens.push(self.m.edge);
                let edges: Vec<(u32, u32, &())> = g.all_edges().collect();
                let (u, v, _) = edges[rng.random_range(0..edges.len() as u32) as usize];
                self.push_edges(&[(u, v), (v, u)], &mut tokens);
                return Example { tokens, prefix_len: 1 };
            }
            CreativeKind::Circle | CreativeKind::Line => {}
        }
        self.push_hash(rng, &mut tokens);
        tokens.push(self.m.q);
        let prefix_len = tokens.len();
        let k = self.nodes as usize;
        let ids = crate::path_star::partial_shuffle(rng, self.entities, k);
        let mut edges: Vec<(u32, u32)> = ids[..k].windows(2).map(|w| (w[0], w[1])).collect();
        if self.kind == CreativeKind::Circle {
            edges.push((ids[k - 1], ids[0]));
        }
        for i in (1..edges.len()).rev() {
            let j = rng.random_range(0..=i as u32) as usize;
            edges.swap(i, j);
        }
        self.push_edges(&edges, &mut tokens);
        Example { tokens, prefix_len }
    }

    /// Splits a target into edges (pairs of entities separated by `<sep>`), ignoring one
    /// trailing `</a>`.
    fn edges_of(&self, output: &[u32]) -> Result<Vec<(u32, u32)>, String> {
        let body = output.strip_suffix(&[self.m.end]).unwrap_or(output);
        if body.is_empty() {
            return Err("empty output".into());
        }
        body.split(|&t| t == self.m.sep)
            .map(|pair| match pair {
                [u, v] if *u < self.entities && *v < self.entities => Ok((*u, *v)),
                _ => Err(format!("`{}` is not a pair of entities", self.vocab.decode(pair))),
            })
            .collect()
    }

    fn check_construction(&self, edges: &[(u32, u32)]) -> Result<(), String> {
        let circle = self.kind == CreativeKind::Circle;
        let want_edges = if circle { self.nodes } else { self.nodes - 1 } as usize;
        if edges.len() != want_edges {
            return Err(format!("{} edges, expected {want_edges}", edges.len()));
        }
        let g: UnGraphMap<u32, ()> = UnGraphMap::from_edges(edges.iter().copied());
        if g.edge_count() != edges.len() || edges.iter().any(|(u, v)| u == v) {
            return Err("an edge repeats or is a self-loop".into());
        }
        if g.node_count() != self.nodes as usize {
            return Err(format!("touches {} entities, expected {}", g.node_count(), self.nodes));
        }
        if petgraph::algo::connected_components(&g) != 1 {
            return Err("the edges fall apart into several pieces".into());
        }
        // Connected with n edges and all degrees 2 is one cycle; connected with n - 1 edges and
        // degrees at most 2 is one path.
        let max_degree = g.nodes().map(|v| g.neighbors(v).count()).max().unwrap_or(0);
        if max_degree > 2 || (circle && g.nodes().any(|v| g.neighbors(v).count() != 2)) {
            return Err("an entity has more than two neighbours".into());
        }
        Ok(())
    }
}

/// The triangle world graph, built as the published notebook builds it
/// (`generate_graph_with_triangles`): each node in turn gets `D - deg` new neighbours drawn
/// without replacement from the non-adjacent nodes of degree at most alpha * D; then each node
/// samples two neighbours T times and joins them if they are not joined yet, every attempt
/// counting for all three nodes (which is what makes the notebook's loop end).
fn triangle_world(p: &TriangleParams) -> UnGraphMap<u32, ()> {
    let mut rng = ChaCha8Rng::seed_from_u64(p.world_seed);
    let n = p.nodes;
    let mut g = UnGraphMap::<u32, ()>::with_capacity(n as usize, (n * p.degree * 3) as usize);
    for v in 0..n {
        g.add_node(v);
    }
    let cap = p.alpha * p.degree as f64;
    for v in 0..n {
        let mut pool: Vec<u32> =
            (0..n).filter(|&u| u != v && !g.contains_edge(u, v) && g.neighbors(u).count() as f64 <= cap).collect();
        let needed = (p.degree as usize).saturating_sub(g.neighbors(v).count()).min(pool.len());
        for i in 0..needed {
            let j = rng.random_range(i as u32..pool.len() as u32) as usize;
            pool.swap(i, j);
            g.add_edge(v, pool[i], ());
        }
    }
    let mut attempts = vec![0u32; n as usize];
    for u in 0..n {
        while attempts[u as usize] < p.triangles_per_node {
            let nb: Vec<u32> = g.neighbors(u).collect();
            if nb.len() < 2 {
                break;
            }
            let (i, j) = two_distinct(&mut rng, nb.len());
            let (v, w) = (nb[i], nb[j]);
            if !g.contains_edge(v, w) {
                g.add_edge(v, w, ());
            }
            for x in [u, v, w] {
                attempts[x as usize] += 1;
            }
        }
    }
    g
}

/// Two distinct indices below `len` (at least 2), uniformly, as Python's `random.sample(_, 2)`.
fn two_distinct(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    let i = rng.random_range(0..len as u32) as usize;
    let j = rng.random_range(0..len as u32 - 1) as usize;
    (i, if j >= i { j + 1 } else { j })
}

/// Number of triangles in an undirected graph.
pub fn count_triangles(g: &UnGraphMap<u32, ()>) -> usize {
    g.all_edges().map(|(u, v, _)| g.neighbors(u).filter(|&w| w > u.max(v) && g.contains_edge(v, w)).count()).sum()
}

impl Task for Creative {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Example {
        self.sample_with(rng, false)
    }

    fn sample_test(&self, rng: &mut ChaCha8Rng) -> Example {
        self.sample_with(rng, true)
    }

    fn eos(&self) -> Option<u32> {
        Some(self.m.end)
    }

    fn is_creative(&self) -> bool {
        true
    }

    fn max_target_len(&self) -> usize {
        match self.kind {
            CreativeKind::Sibling => 4,
            CreativeKind::Triangle => 9,
            CreativeKind::Circle => 3 * self.nodes as usize,
            CreativeKind::Line => 3 * (self.nodes as usize - 1),
        }
    }

    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict {
        let res = match self.kind {
            CreativeKind::Sibling => {
                let (a, c) = self.sibling.expect("sibling task has its sizes");
                let body = output.strip_suffix(&[self.m.end]).unwrap_or(output);
                match *body {
                    [b1, b2, p]
                        if p < a && (a..a + a * c).contains(&b1) && (a + a * c..a + 2 * a * c).contains(&b2) =>
                    {
                        let (p1, p2) = ((b1 - a) / c, (b2 - a - a * c) / c);
                        if p1 == p && p2 == p {
                            Ok(())
                        } else {
                            Err(format!("parents of the children are a{p1} and a{p2}, not a{p}"))
                        }
                    }
                    _ => Err(format!("`{}` is not `b1_* b2_* a*`", self.vocab.decode(body))),
                }
            }
            CreativeKind::Triangle => {
                let g = self.world().expect("triangle task has a world");
                let edges = self.edges_of(output);
                let is_edge_prompt = prefix.last() == Some(&self.m.edge);
                edges.and_then(|e| match (is_edge_prompt, e.as_slice()) {
                    (false, [(a, b), (b2, c), (c2, a2)])
                        if b == b2 && c == c2 && a == a2 && a != b && b != c && a != c =>
                    {
                        match [(a, b), (b, c), (c, a)].into_iter().find(|(u, v)| !g.contains_edge(**u, **v)) {
                            None => Ok(()),
                            Some((u, v)) => Err(format!("n{u} - n{v} is not an edge of the world")),
                        }
                    }
                    (true, [(u, v), (v2, u2)]) if u == u2 && v == v2 => {
                        if g.contains_edge(*u, *v) {
                            Ok(())
                        } else {
                            Err(format!("n{u} - n{v} is not an edge"))
                        }
                    }
                    _ => Err("not a closed chain `a b <sep> b c <sep> c a` of three nodes".into()),
                })
            }
            CreativeKind::Circle | CreativeKind::Line => {
                self.edges_of(output).and_then(|e| self.check_construction(&e))
            }
        };
        match res {
            Ok(()) => Verdict::Valid,
            Err(e) => Verdict::Invalid(e),
        }
    }

    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String> {
        if self.kind == CreativeKind::Triangle && prefix == [self.m.edge] {
            return Ok(());
        }
        let h = self.hash_len as usize;
        let marker = if self.kind == CreativeKind::Triangle { self.m.tri } else { self.m.q };
        let hash_ok = prefix.len() == h + 1 && prefix[..h].iter().all(|&t| t >= self.m.hash0);
        if !hash_ok || prefix[h] != marker {
            return Err(format!("expected {h} hash characters then `{}`", self.vocab.decode(&[marker])));
        }
        Ok(())
    }

    fn instance_key(&self, example: &Example) -> Vec<u32> {
        // A prompt and what it asks for: with hashes, prompts hardly ever repeat; without them,
        // every prompt is the same and the key is the canonical target.
        let mut key = example.prefix().to_vec();
        key.extend(self.canonical(example.target()).unwrap_or_else(|| example.target().to_vec()));
        key
    }

    fn canonical(&self, target: &[u32]) -> Option<Vec<u32>> {
        match self.kind {
            CreativeKind::Sibling => Some(target.strip_suffix(&[self.m.end]).unwrap_or(target).to_vec()),
            CreativeKind::Triangle => {
                let e = self.edges_of(target).ok()?;
                if e.len() != 3 {
                    return None;
                }
                let mut nodes = [e[0].0, e[1].0, e[2].0];
                nodes.sort_unstable();
                Some(nodes.to_vec())
            }
            CreativeKind::Circle | CreativeKind::Line => {
                // The set of undirected edges determines a cycle or a path whatever the order,
                // direction or starting point it is written in.
                let mut e: Vec<(u32, u32)> =
                    self.edges_of(target).ok()?.into_iter().map(|(u, v)| (u.min(v), u.max(v))).collect();
                e.sort_unstable();
                Some(e.into_iter().flat_map(|(u, v)| [u, v]).collect())
            }
        }
    }

    fn describe(&self, example: &Example) -> String {
        let t = example.text(&self.vocab);
        let mut out = format!("{} => {}", t.prompt, t.target);
        if let Some(c) = self.canonical(example.target()) {
            let _ = write!(out, "\n  canonical form: {}", self.vocab.decode(&c));
        }
        if let Some(g) = self.world() {
            let _ = write!(
                out,
                "\n  world: {} nodes, {} edges, {} triangles",
                g.node_count(),
                g.edge_count(),
                count_triangles(g)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Creative> {
        vec![
            Creative::sibling(SiblingParams::default()).unwrap(),
            Creative::triangle(TriangleParams::default()).unwrap(),
            Creative::construction(CreativeKind::Circle, CreativeParams::circle()).unwrap(),
            Creative::construction(CreativeKind::Line, CreativeParams::line()).unwrap(),
        ]
    }

    #[test]
    fn generated_examples_are_coherent() {
        for t in all() {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            for i in 0..500 {
                let ex = if i % 2 == 0 { t.sample(&mut rng) } else { t.sample_test(&mut rng) };
                t.check(&ex).unwrap_or_else(|e| panic!("{:?}: {e}: {}", t.kind, t.vocab.decode(&ex.tokens)));
            }
        }
    }

    #[test]
    fn triangle_world_resembles_the_published_one() {
        let t = Creative::triangle(TriangleParams::default()).unwrap();
        let g = t.world().unwrap();
        // The published generator gives ~3,700 edges and ~2,300 triangles on 999 nodes.
        assert!((3000..4500).contains(&g.edge_count()), "{} edges", g.edge_count());
        let tri = count_triangles(g);
        assert!((1500..3200).contains(&tri), "{tri} triangles");
    }

    #[test]
    fn coherence_by_hand() {
        let circle =
            Creative::construction(CreativeKind::Circle, CreativeParams { entities: 5, nodes: 4, hash_len: 0 })
                .unwrap();
        let v = circle.vocab();
        let prefix = v.encode("<q>").unwrap();
        let ok = v.encode("n0 n1 <sep> n2 n3 <sep> n1 n2 <sep> n3 n0 </a>").unwrap();
        assert!(circle.verify(&prefix, &ok).is_valid());
        // Two 2-cycles over four nodes are not one circle (and repeat edges).
        let two = v.encode("n0 n1 <sep> n1 n0 <sep> n2 n3 <sep> n3 n2 </a>").unwrap();
        assert!(!circle.verify(&prefix, &two).is_valid());
        let short = v.encode("n0 n1 <sep> n1 n2 <sep> n2 n0 </a>").unwrap();
        assert!(circle.verify(&prefix, &short).to_string().contains("3 edges"));
        // Rotation, reflection and edge order do not change the canonical form.
        let same = v.encode("n3 n2 <sep> n0 n3 <sep> n2 n1 <sep> n1 n0 </a>").unwrap();
        assert_eq!(circle.canonical(&ok), circle.canonical(&same));

        let line =
            Creative::construction(CreativeKind::Line, CreativeParams { entities: 4, nodes: 4, hash_len: 0 }).unwrap();
        let v = line.vocab();
        assert!(line.verify(&prefix, &v.encode("n2 n3 <sep> n0 n1 <sep> n1 n2 </a>").unwrap()).is_valid());
        let star = v.encode("n0 n1 <sep> n0 n2 <sep> n0 n3 </a>").unwrap();
        assert!(line.verify(&prefix, &star).to_string().contains("more than two"));

        let sib = Creative::sibling(SiblingParams { parents: 2, children: 3, hash_len: 0 }).unwrap();
        let v = sib.vocab();
        // a1's children are b1_3..b1_5 and b2_3..b2_5.
        assert!(sib.verify(&prefix, &v.encode("b1_4 b2_5 a1 </a>").unwrap()).is_valid());
        assert!(sib.verify(&prefix, &v.encode("b1_4 b2_0 a1 </a>").unwrap()).to_string().contains("a0"));
        assert!(!sib.verify(&prefix, &v.encode("b2_4 b1_0 a1 </a>").unwrap()).is_valid());
    }

    #[test]
    fn triangle_verifier_checks_all_three_edges() {
        let t = Creative::triangle(TriangleParams::default()).unwrap();
        let g = t.world().unwrap();
        let tri_prompt = vec![t.m.tri];
        // Find a path a - b - c that is not closed: a "triangle" missing its last edge.
        let (a, b, c) = g
            .all_edges()
            .find_map(|(a, b, _)| g.neighbors(b).find(|&c| c != a && !g.contains_edge(c, a)).map(|c| (a, b, c)))
            .unwrap();
        let open = vec![a, b, t.m.sep, b, c, t.m.sep, c, a, t.m.end];
        assert!(t.verify(&tri_prompt, &open).to_string().contains("not an edge"));
    }
}

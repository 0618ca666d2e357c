//! Task specifications: a task's name and parameters, as written in manifests and configs, and
//! the registry of tasks that generates them.
//!
//! Every task is listed once, in the `registry!` invocation below: its variant, its name, the
//! type of its parameters (serialised in manifests and configs), the type of its command-line
//! flags, its default parameters and split sizes, how it is built, and its documentation. From
//! that one list come [`TaskSpec`] (with [`TaskSpec::name`], [`TaskSpec::NAMES`],
//! [`TaskSpec::default_of`], [`TaskSpec::default_sizes`] and [`TaskSpec::build`]) and the
//! `tasks` command's subcommands, [`TaskCommand`], with their conversion into a [`TaskSpec`].
//! Adding a task means writing its module and adding one entry to the list.

use serde::{Deserialize, Serialize};

use crate::Task;
use crate::creative::{CircleArgs, Creative, CreativeKind, CreativeParams, LineArgs, SiblingParams, TriangleParams};
use crate::long_range::{GraphWalk, GraphWalkParams, KeyRecall, KeyRecallParams, PrefixFunction, PrefixFunctionParams};
use crate::path_star::{PathStar, PathStarParams};

/// Generates [`TaskSpec`], its methods and [`TaskCommand`] from one list of tasks.
///
/// Each entry reads
///
/// ```text
/// /// Documentation, shown in the API docs and as the subcommand's help.
/// Variant(ParamsType) {
///     name: "kebab-name",          // the `task` field of the JSON / TOML form, and the subcommand
///     cli: FlagsType,              // clap::Args; `ParamsType: From<FlagsType>`
///     default: expression,         // the published (or the lab's default) ParamsType
///     sizes: (train, test),        // `tasks gen`'s default split sizes
///     build: |p| expression,       // p: ParamsType, the expression: Result<impl Task, SpecError>
/// }
/// ```
macro_rules! registry {
    ($(
        $(#[doc = $doc:literal])+
        $variant:ident($params:ty) {
            name: $name:literal,
            cli: $cli:ty,
            default: $default:expr,
            sizes: ($train:expr, $test:expr),
            build: |$p:ident| $build:expr $(,)?
        }
    )+) => {
        /// A task and its parameters. Serialised with the task's name in a `task` field, e.g.
        /// `{"task": "path-star", "degree": 2, "path_len": 5, "nodes": 50, "reverse": false}`; the
        /// same shape is the `[task]` section of a training config.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "task")]
        pub enum TaskSpec {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $name)]
                $variant($params),
            )+
        }

        /// The tasks as subcommands of the `tasks` command line (`tasks gen path-star --nodes 20`),
        /// every parameter a flag whose default is the published setting.
        #[derive(Clone, Debug, clap::Subcommand)]
        pub enum TaskCommand {
            $(
                $(#[doc = $doc])+
                #[command(name = $name)]
                $variant($cli),
            )+
        }

        impl TaskSpec {
            /// Every task name, in the registry's order, for help texts and error messages.
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// The task's name as written on the command line and in manifests (`path-star`, ...).
            pub fn name(&self) -> &'static str {
                match self {
                    $(TaskSpec::$variant(_) => $name,)+
                }
            }

            /// The published (or the lab's default) parameters of a task, by name.
            pub fn default_of(name: &str) -> Option<TaskSpec> {
                match name {
                    $($name => Some(TaskSpec::$variant($default)),)+
                    _ => None,
                }
            }

            /// The split sizes `tasks gen` writes when none are asked for, as (train, test): NTF's
            /// 200k / 20k, and the creative-task notebooks' own.
            pub fn default_sizes(&self) -> (u64, u64) {
                match self {
                    $(TaskSpec::$variant(_) => ($train, $test),)+
                }
            }

            /// Validates the parameters and builds the task (creative tasks build their world
            /// here, from the world seed in their parameters).
            pub fn build(&self) -> Result<Box<dyn Task>, SpecError> {
                Ok(match self {
                    $(TaskSpec::$variant(params) => {
                        let $p: $params = params.clone();
                        Box::new($build?)
                    })+
                })
            }
        }

        impl From<TaskCommand> for TaskSpec {
            /// The specification a subcommand's flags describe.
            fn from(cmd: TaskCommand) -> TaskSpec {
                match cmd {
                    $(TaskCommand::$variant(flags) => TaskSpec::$variant(<$params>::from(flags)),)+
                }
            }
        }
    };
}

registry! {
    /// Path-star graphs G(d, l, N) of Bachmann & Nagarajan (2024).
    PathStar(PathStarParams) {
        name: "path-star",
        cli: PathStarParams,
        default: PathStarParams::default(),
        sizes: (200_000, 20_000),
        build: |p| PathStar::new(p),
    }
    /// A key shown at the start decides the answer after a distractor span.
    KeyRecall(KeyRecallParams) {
        name: "key-recall",
        cli: KeyRecallParams,
        default: KeyRecallParams::default(),
        sizes: (200_000, 20_000),
        build: |p| KeyRecall::new(p),
    }
    /// The answer is a function (sum mod m, parity, majority) of the first k tokens, after a
    /// distractor span.
    PrefixFunction(PrefixFunctionParams) {
        name: "prefix-function",
        cli: PrefixFunctionParams,
        default: PrefixFunctionParams::default(),
        sizes: (200_000, 20_000),
        build: |p| PrefixFunction::new(p),
    }
    /// A walk on a given graph that must end at a named node after exactly n steps.
    GraphWalk(GraphWalkParams) {
        name: "graph-walk",
        cli: GraphWalkParams,
        default: GraphWalkParams::default(),
        sizes: (200_000, 20_000),
        build: |p| GraphWalk::new(p),
    }
    /// Sibling discovery (Nagarajan et al. 2025): two children that share a parent, then the
    /// parent.
    Sibling(SiblingParams) {
        name: "sibling",
        cli: SiblingParams,
        default: SiblingParams::default(),
        sizes: (50_000, 3_000),
        build: |p| Creative::sibling(p),
    }
    /// Triangle discovery (Nagarajan et al. 2025) in a fixed random graph learnt from its edges.
    Triangle(TriangleParams) {
        name: "triangle",
        cli: TriangleParams,
        default: TriangleParams::default(),
        sizes: (15_000, 1_024),
        build: |p| Creative::triangle(p),
    }
    /// Circle construction (Nagarajan et al. 2025): a cycle through some of the entities, edges
    /// in any order.
    Circle(CreativeParams) {
        name: "circle",
        cli: CircleArgs,
        default: CreativeParams::circle(),
        sizes: (10_000, 1_024),
        build: |p| Creative::construction(CreativeKind::Circle, p),
    }
    /// Line construction (Nagarajan et al. 2025): a path through all of the entities, edges in
    /// any order.
    Line(CreativeParams) {
        name: "line",
        cli: LineArgs,
        default: CreativeParams::line(),
        sizes: (10_000, 1_024),
        build: |p| Creative::construction(CreativeKind::Line, p),
    }
}

impl TaskCommand {
    /// The specification the subcommand's flags describe.
    pub fn spec(&self) -> TaskSpec {
        TaskSpec::from(self.clone())
    }
}

/// Why a specification cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The parameters admit no task (or one the lab will not generate).
    #[error("invalid {task} parameters: {msg}")]
    Invalid {
        /// The task's name.
        task: &'static str,
        /// What is wrong, in words.
        msg: String,
    },
}

impl TaskSpec {
    /// A short name for a directory: the parameters that differ from [`TaskSpec::default_of`]
    /// as `key_value` pairs, or `default`.
    pub fn slug(&self) -> String {
        let fields = |spec: &TaskSpec| match serde_json::to_value(spec) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("specs serialise to objects"),
        };
        let ours = fields(self);
        let defaults = TaskSpec::default_of(self.name()).map(|d| fields(&d)).unwrap_or_default();
        let parts: Vec<String> = ours
            .iter()
            .filter(|(k, v)| k.as_str() != "task" && defaults.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}_{}", v.to_string().trim_matches('"')))
            .collect();
        if parts.is_empty() { "default".into() } else { parts.join("_") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_flat_with_a_task_tag() {
        let spec = TaskSpec::PathStar(PathStarParams::default());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"task":"path-star","degree":2,"path_len":5,"nodes":50,"reverse":false}"#);
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), spec);
    }

    /// The serialised defaults of every task, as manifests and configs written before the
    /// registry hold them.
    const DEFAULTS: [&str; 8] = [
        r#"{"task":"path-star","degree":2,"path_len":5,"nodes":50,"reverse":false}"#,
        r#"{"task":"key-recall","symbols":16,"min_gap":4,"max_gap":64}"#,
        r#"{"task":"prefix-function","function":"sum-mod","modulus":3,"k":4,"min_gap":0,"max_gap":32}"#,
        r#"{"task":"graph-walk","nodes":10,"out_degree":2,"steps":6}"#,
        r#"{"task":"sibling","parents":5,"children":500,"hash_len":10}"#,
        concat!(
            r#"{"task":"triangle","nodes":999,"degree":3,"alpha":1.2,"triangles_per_node":6,"#,
            r#""triangle_fraction":0.3333333333333333,"world_seed":0,"hash_len":10}"#
        ),
        r#"{"task":"circle","entities":10,"nodes":9,"hash_len":10}"#,
        r#"{"task":"line","entities":10,"nodes":10,"hash_len":10}"#,
    ];

    #[test]
    fn every_task_serialises_as_before() {
        assert_eq!(
            TaskSpec::NAMES,
            ["path-star", "key-recall", "prefix-function", "graph-walk", "sibling", "triangle", "circle", "line"]
        );
        for (name, json) in TaskSpec::NAMES.iter().zip(DEFAULTS) {
            let spec = TaskSpec::default_of(name).unwrap();
            assert_eq!(serde_json::to_string(&spec).unwrap(), json);
            assert_eq!(serde_json::from_str::<TaskSpec>(json).unwrap(), spec);
        }
    }

    /// Parses a `tasks` command line's task part, e.g. `["line", "--nodes", "5"]`.
    fn parse_cli(args: &[&str]) -> TaskSpec {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            task: TaskCommand,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("tasks").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.task.spec()
    }

    #[test]
    fn the_command_line_defaults_are_the_registry_defaults() {
        // Before the registry, `tasks gen line` made lines over 9 entities (circle's default):
        // clap keeps a flag's default in a static that every instance of a generic flag type
        // shares.
        for name in TaskSpec::NAMES {
            assert_eq!(parse_cli(&[name]), TaskSpec::default_of(name).unwrap(), "{name}");
        }
        assert_eq!(
            parse_cli(&["line", "--nodes", "5", "--hash-len", "0"]),
            TaskSpec::Line(CreativeParams { entities: 10, nodes: 5, hash_len: 0 })
        );
        assert_eq!(
            parse_cli(&["path-star", "-d", "3", "-l", "4", "-N", "20", "--reverse"]),
            TaskSpec::PathStar(PathStarParams { degree: 3, path_len: 4, nodes: 20, reverse: true })
        );
    }

    #[test]
    fn only_path_star_offers_the_path_star_capability() {
        for name in TaskSpec::NAMES {
            let task = TaskSpec::default_of(name).unwrap().build().unwrap();
            assert_eq!(task.as_path_star().is_some(), name == "path-star", "{name}");
            let (train, test) = task.spec().default_sizes();
            assert!(train > 0 && test > 0);
        }
    }

    #[test]
    fn slugs_name_what_differs_from_the_defaults() {
        for name in TaskSpec::NAMES {
            let spec = TaskSpec::default_of(name).unwrap();
            assert_eq!(spec.name(), name);
            assert_eq!(spec.slug(), "default");
            spec.build().unwrap();
        }
        let walk = TaskSpec::GraphWalk(GraphWalkParams { steps: 8, ..Default::default() });
        assert_eq!(walk.slug(), "steps_8");
    }

    #[test]
    fn missing_fields_take_the_published_defaults() {
        let spec: TaskSpec = serde_json::from_str(r#"{"task":"path-star","nodes":20}"#).unwrap();
        assert_eq!(spec, TaskSpec::PathStar(PathStarParams { nodes: 20, ..Default::default() }));
        let spec: TaskSpec = serde_json::from_str(r#"{"task":"triangle"}"#).unwrap();
        assert_eq!(spec, TaskSpec::default_of("triangle").unwrap());
        // Circle and line differ in their defaults, so they name their sizes.
        let err = serde_json::from_str::<TaskSpec>(r#"{"task":"line"}"#).unwrap_err().to_string();
        assert!(err.contains("entities"), "{err}");
    }

    #[test]
    fn unknown_fields_and_tasks_are_errors() {
        let err =
            serde_json::from_str::<TaskSpec>(r#"{"task":"path-star","degree":2,"path_len":5,"nodes":50,"colour":1}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(serde_json::from_str::<TaskSpec>(r#"{"task":"maze"}"#).is_err());
    }
}

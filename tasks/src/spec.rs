//! Task specifications: a task's name and parameters, as written in manifests and configs.

use serde::{Deserialize, Serialize};

use crate::Task;
use crate::creative::{Creative, CreativeKind, CreativeParams, SiblingParams, TriangleParams};
use crate::long_range::{GraphWalk, GraphWalkParams, KeyRecall, KeyRecallParams, PrefixFunction, PrefixFunctionParams};
use crate::path_star::{PathStar, PathStarParams};

/// A task and its parameters. Serialised with the task's name in a `task` field, e.g.
/// `{"task": "path-star", "degree": 2, "path_len": 5, "nodes": 50, "reverse": false}`; the same
/// shape is the `[task]` section of a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum TaskSpec {
    /// Path-star graphs G(d, l, N) of Bachmann & Nagarajan.
    PathStar(PathStarParams),
    /// A key shown at the start decides the answer after a distractor span.
    KeyRecall(KeyRecallParams),
    /// The answer is a function (sum mod m, parity, majority) of the first k tokens.
    PrefixFunction(PrefixFunctionParams),
    /// A walk on a given graph that must end at a named node after exactly n steps.
    GraphWalk(GraphWalkParams),
    /// Sibling discovery: two children that share a parent, then the parent.
    Sibling(SiblingParams),
    /// Triangle discovery in a fixed random graph learnt from its edges.
    Triangle(TriangleParams),
    /// Circle construction: a cycle through some of the entities, edges in any order.
    Circle(CreativeParams),
    /// Line construction: a path through all of the entities, edges in any order.
    Line(CreativeParams),
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
    /// The task's name as written on the command line and in manifests (`path-star`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::PathStar(_) => "path-star",
            TaskSpec::KeyRecall(_) => "key-recall",
            TaskSpec::PrefixFunction(_) => "prefix-function",
            TaskSpec::GraphWalk(_) => "graph-walk",
            TaskSpec::Sibling(_) => "sibling",
            TaskSpec::Triangle(_) => "triangle",
            TaskSpec::Circle(_) => "circle",
            TaskSpec::Line(_) => "line",
        }
    }

    /// Every task name, for help texts and error messages.
    pub const NAMES: [&'static str; 8] =
        ["path-star", "key-recall", "prefix-function", "graph-walk", "sibling", "triangle", "circle", "line"];

    /// The published (or the lab's default) parameters of a task, by name.
    pub fn default_of(name: &str) -> Option<TaskSpec> {
        Some(match name {
            "path-star" => TaskSpec::PathStar(PathStarParams::default()),
            "key-recall" => TaskSpec::KeyRecall(KeyRecallParams::default()),
            "prefix-function" => TaskSpec::PrefixFunction(PrefixFunctionParams::default()),
            "graph-walk" => TaskSpec::GraphWalk(GraphWalkParams::default()),
            "sibling" => TaskSpec::Sibling(SiblingParams::default()),
            "triangle" => TaskSpec::Triangle(TriangleParams::default()),
            "circle" => TaskSpec::Circle(CreativeParams::circle()),
            "line" => TaskSpec::Line(CreativeParams::line()),
            _ => return None,
        })
    }

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

    /// Validates the parameters and builds the task (creative tasks build their world here,
    /// from the world seed in their parameters).
    pub fn build(&self) -> Result<Box<dyn Task>, SpecError> {
        Ok(match self {
            TaskSpec::PathStar(p) => Box::new(PathStar::new(p.clone())?),
            TaskSpec::KeyRecall(p) => Box::new(KeyRecall::new(p.clone())?),
            TaskSpec::PrefixFunction(p) => Box::new(PrefixFunction::new(p.clone())?),
            TaskSpec::GraphWalk(p) => Box::new(GraphWalk::new(p.clone())?),
            TaskSpec::Sibling(p) => Box::new(Creative::sibling(p.clone())?),
            TaskSpec::Triangle(p) => Box::new(Creative::triangle(p.clone())?),
            TaskSpec::Circle(p) => Box::new(Creative::construction(CreativeKind::Circle, p.clone())?),
            TaskSpec::Line(p) => Box::new(Creative::construction(CreativeKind::Line, p.clone())?),
        })
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

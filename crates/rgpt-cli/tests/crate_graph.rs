//! The crate graph that docs/architecture.md draws, enforced. Every
//! dependency between workspace crates (normal and build; dev-dependencies
//! may reach anywhere) must follow [`LAYERS`]: a crate may depend on the
//! crates its line names and, through them, on every crate they may depend
//! on; an edge named under a feature only as an optional dependency. The
//! picture in docs/architecture.md must state the same lines, so the two
//! cannot drift apart, and the crates that stand alone must not need
//! libtorch without their default features.
//!
//! The manifests are read through `cargo metadata --no-deps --offline`,
//! which parses every `crates/*/Cargo.toml` as cargo does (workspace
//! inheritance, renamed and target-specific dependencies) without touching
//! the network or the lock file.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `(crate, may depend on, may depend on as an optional dependency behind a
/// feature)`; each also reaches what the crates it names may reach. The
/// same lines, in the same words, are the picture in docs/architecture.md.
const LAYERS: &[(&str, &[&str], &[&str])] = &[
    (
        "rgpt-cli",
        &[
            "rgpt-demo",
            "rgpt-train",
            "rgpt-eval",
            "rgpt-data",
            "rgpt-serve",
            "rgpt-bench",
            "rgpt-dist",
            "rgpt-model",
        ],
        &[],
    ),
    (
        "rgpt-demo",
        &["rgpt-train", "rgpt-eval", "rgpt-data", "rgpt-model"],
        &[],
    ),
    ("rgpt-train", &["rgpt-data", "rgpt-model", "rgpt-dist"], &[]),
    ("rgpt-serve", &["rgpt-model"], &[]),
    ("rgpt-bench", &["rgpt-model"], &[]),
    ("rgpt-eval", &["rgpt-region"], &["rgpt-model", "rgpt-data"]),
    ("rgpt-data", &["rgpt-region"], &[]),
    (
        "rgpt-model",
        &[
            "rgpt-vision",
            "rgpt-region",
            "rgpt-connector",
            "rgpt-llm",
            "rgpt-weights",
        ],
        &[],
    ),
    ("rgpt-vision", &["rgpt-weights", "rgpt-autograd"], &[]),
    ("rgpt-llm", &["rgpt-weights", "rgpt-autograd"], &[]),
    ("rgpt-connector", &["rgpt-weights"], &[]),
    ("rgpt-region", &[], &[]),
    ("rgpt-weights", &[], &[]),
    ("rgpt-dist", &[], &[]),
    ("rgpt-autograd", &[], &[]),
];

/// Crates that stand alone: without their default features they need
/// neither libtorch nor a crate outside this list.
const STANDALONE: &[&str] = &["rgpt-region", "rgpt-eval"];

const DOC: &str = "docs/architecture.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One dependency of a workspace crate.
struct Dep {
    /// The package depended on (not a rename).
    name: String,
    kind: Option<String>,
    optional: bool,
    default_features: bool,
}

/// Each workspace crate with its manifest (relative to the root) and its
/// dependencies.
fn workspace() -> BTreeMap<String, (String, Vec<Dep>)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root().join("Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let root = root().canonicalize().expect("workspace root");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let path = PathBuf::from(text(&p["manifest_path"]));
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| Dep {
                    name: text(&d["name"]),
                    kind: d["kind"].as_str().map(str::to_string),
                    optional: d["optional"].as_bool().unwrap_or(false),
                    default_features: d["uses_default_features"].as_bool().unwrap_or(true),
                })
                .collect();
            (text(&p["name"]), (relative.display().to_string(), deps))
        })
        .collect()
}

/// The crates `from` may reach along the layering's edges: through normal
/// edges only, or through any.
fn reachable(from: &str, optional_too: bool) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(name) = todo.pop() {
        let Some((_, normal, optional)) = LAYERS.iter().find(|(c, _, _)| *c == name) else {
            continue;
        };
        let extra: &[&str] = if optional_too { optional } else { &[] };
        for next in normal.iter().chain(extra) {
            if seen.insert(*next) {
                todo.push(next.to_string());
            }
        }
    }
    seen
}

fn layering_help() -> String {
    format!(
        "see the crate graph in {DOC}; to change the layering, change that picture and LAYERS \
         in crates/rgpt-cli/tests/crate_graph.rs together"
    )
}

#[test]
fn every_dependency_between_workspace_crates_follows_the_layering() {
    let crates = workspace();
    let mut errors = Vec::new();
    for name in crates.keys() {
        if !LAYERS.iter().any(|(c, _, _)| c == name) {
            errors.push(format!("crate {name} has no place in the layering"));
        }
    }
    for (name, _, _) in LAYERS {
        if !crates.contains_key(*name) {
            errors.push(format!(
                "the layering names {name}, which is not a workspace crate"
            ));
        }
    }
    for (name, (manifest, deps)) in &crates {
        let normal = reachable(name, false);
        let any = reachable(name, true);
        for dep in deps {
            if dep.kind.as_deref() == Some("dev") || !crates.contains_key(&dep.name) {
                continue;
            }
            let target = dep.name.as_str();
            if normal.contains(target) || (dep.optional && any.contains(target)) {
                continue;
            }
            let why = if any.contains(target) {
                "allowed only as an optional dependency behind a feature"
            } else {
                "not allowed"
            };
            errors.push(format!(
                "{manifest}: the edge {name} -> {target} is {why} (the layering lets {name} \
                 depend on {}{})",
                if normal.is_empty() {
                    "no workspace crate".to_string()
                } else {
                    normal.iter().copied().collect::<Vec<_>>().join(", ")
                },
                if any.len() > normal.len() {
                    format!(
                        ", and optionally on {}",
                        any.difference(&normal)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "the crate graph breaks the layering:\n  {}\n{}",
        errors.join("\n  "),
        layering_help()
    );
}

#[test]
fn standalone_crates_need_no_libtorch_without_default_features() {
    let crates = workspace();
    let mut errors = Vec::new();
    for name in STANDALONE {
        let Some((manifest, deps)) = crates.get(*name) else {
            errors.push(format!("{name} is not a workspace crate"));
            continue;
        };
        for dep in deps {
            if dep.kind.as_deref() == Some("dev") || dep.optional {
                continue;
            }
            if dep.name == "tch" || dep.name == "torch-sys" {
                errors.push(format!(
                    "{manifest}: {name} needs {} even without default features; make it \
                     optional behind a default feature",
                    dep.name
                ));
            } else if crates.contains_key(&dep.name) {
                if !STANDALONE.contains(&dep.name.as_str()) {
                    errors.push(format!(
                        "{manifest}: {name} needs {}, which does not stand alone; make it \
                         optional behind a default feature",
                        dep.name
                    ));
                } else if dep.default_features {
                    errors.push(format!(
                        "{manifest}: {name} takes {} with its default features (libtorch); \
                         give it `default-features = false`",
                        dep.name
                    ));
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{}\n{}",
        errors.join("\n"),
        layering_help()
    );
}

/// The lines of the crate graph in docs/architecture.md: the fenced block
/// whose lines read `crate[, crate...] -> crates[; feature NAME: crates]`.
fn documented_layers(doc: &Path) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(doc).expect("docs/architecture.md");
    let block = text
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.lines().any(|l| l.trim_start().starts_with("rgpt-cli ")))
        .unwrap_or_else(|| panic!("{DOC} has no block of `rgpt-cli -> ...` lines"));
    let names = |list: &str| -> BTreeSet<String> {
        match list.trim() {
            "(none)" => BTreeSet::new(),
            list => list.split(',').map(|n| n.trim().to_string()).collect(),
        }
    };
    let mut layers = BTreeMap::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (sources, targets) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("{DOC}: `{line}` is not `crate -> crates`"));
        let (normal, optional) = match targets.split_once(';') {
            Some((normal, feature)) => {
                let (_, list) = feature
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{DOC}: `{line}`: expected `; feature NAME: ...`"));
                (names(normal), names(list))
            }
            None => (names(targets), BTreeSet::new()),
        };
        for source in names(sources) {
            let previous = layers.insert(source.clone(), (normal.clone(), optional.clone()));
            assert!(previous.is_none(), "{DOC}: {source} has two lines");
        }
    }
    layers
}

#[test]
fn architecture_doc_draws_the_enforced_layering() {
    let documented = documented_layers(&root().join(DOC));
    let enforced: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = LAYERS
        .iter()
        .map(|(name, normal, optional)| {
            let set = |l: &[&str]| l.iter().map(|n| n.to_string()).collect();
            (name.to_string(), (set(normal), set(optional)))
        })
        .collect();
    for (name, lines) in &enforced {
        assert_eq!(
            documented.get(name),
            Some(lines),
            "{name}: the crate graph in {DOC} differs from LAYERS (normal, optional); {}",
            layering_help()
        );
    }
    let extra: Vec<&String> = documented
        .keys()
        .filter(|n| !enforced.contains_key(*n))
        .collect();
    assert!(
        extra.is_empty(),
        "{DOC} draws crates LAYERS lacks: {extra:?}"
    );
}

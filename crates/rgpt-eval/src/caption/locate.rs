//! Finding the reference jars that pycocoevalcap 1.2 ships:
//! `meteor/meteor-1.5.jar` and `tokenizer/stanford-corenlp-3.4.1.jar`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::EvalError;

/// One of the Java tools pycocoevalcap bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceJar {
    /// `meteor/meteor-1.5.jar`.
    Meteor,
    /// `tokenizer/stanford-corenlp-3.4.1.jar`.
    CoreNlp,
}

impl ReferenceJar {
    pub fn file_name(self) -> &'static str {
        match self {
            ReferenceJar::Meteor => "meteor-1.5.jar",
            ReferenceJar::CoreNlp => "stanford-corenlp-3.4.1.jar",
        }
    }

    /// The jar's place inside the `pycocoevalcap` package directory.
    pub fn path_in_package(self) -> PathBuf {
        match self {
            ReferenceJar::Meteor => Path::new("meteor").join(self.file_name()),
            ReferenceJar::CoreNlp => Path::new("tokenizer").join(self.file_name()),
        }
    }

    /// The environment variable that names the jar directly.
    pub fn env_var(self) -> &'static str {
        match self {
            ReferenceJar::Meteor => "RGPT_METEOR_JAR",
            ReferenceJar::CoreNlp => "RGPT_CORENLP_JAR",
        }
    }
}

/// Finds a reference jar, in this order: the jar's environment variable
/// (an error if it names a missing file); the active virtualenv
/// (`$VIRTUAL_ENV`); a `.venv` in the current directory or any parent; the
/// `pycocoevalcap` that `python3` imports.
pub fn locate_jar(which: ReferenceJar) -> Result<PathBuf, EvalError> {
    if let Some(path) = std::env::var_os(which.env_var()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(EvalError::JarMissing { jar: path })
        };
    }
    let mut searched = vec![format!("${} (unset)", which.env_var())];
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if venvs.is_empty() {
        searched.push("$VIRTUAL_ENV (unset)".into());
    }
    if let Ok(cwd) = std::env::current_dir() {
        venvs.extend(cwd.ancestors().map(|dir| dir.join(".venv")));
    }
    let mut found_venv = false;
    for venv in venvs.iter().filter(|v| v.is_dir()) {
        found_venv = true;
        let packages = packages_in_venv(venv);
        if packages.is_empty() {
            searched.push(format!("{} (no pycocoevalcap in it)", venv.display()));
        }
        for package in packages {
            let jar = package.join(which.path_in_package());
            if jar.is_file() {
                return Ok(jar);
            }
            searched.push(jar.display().to_string());
        }
    }
    if !found_venv {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the working directory".into());
        searched.push(format!("a .venv in {cwd} or a parent (none there)"));
    }
    match python_package_dir() {
        Some(package) => {
            let jar = package.join(which.path_in_package());
            if jar.is_file() {
                return Ok(jar);
            }
            searched.push(jar.display().to_string());
        }
        None => searched.push("python3's pycocoevalcap (not importable)".into()),
    }
    Err(EvalError::JarNotFound {
        jar_name: which.file_name(),
        env: which.env_var(),
        searched,
    })
}

/// The jar inside a given virtualenv (`VENV/lib/python3*/site-packages/
/// pycocoevalcap/...`), if installed there.
pub fn jar_in_venv(venv: &Path, which: ReferenceJar) -> Option<PathBuf> {
    packages_in_venv(venv)
        .into_iter()
        .map(|package| package.join(which.path_in_package()))
        .find(|jar| jar.is_file())
}

/// `VENV/lib/python*/site-packages/pycocoevalcap` for each Python version.
fn packages_in_venv(venv: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("site-packages").join("pycocoevalcap"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Where `python3` imports pycocoevalcap from, if it does.
fn python_package_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, pycocoevalcap; print(os.path.dirname(pycocoevalcap.__file__))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(dir.trim());
    dir.is_dir().then_some(dir)
}

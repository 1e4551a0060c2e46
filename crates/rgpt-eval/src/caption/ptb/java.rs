//! The exact path: Stanford CoreNLP 3.4.1's `PTBTokenizer` run as
//! pycocoevalcap's ptbtokenizer.py runs it (all captions in one temporary
//! file, one per line, one JVM), used to check the native tokenizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::strip_punctuation;
use crate::error::EvalError;

/// Runs `java -cp stanford-corenlp-3.4.1.jar
/// edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase FILE`.
pub struct JavaPtbTokenizer {
    jar: PathBuf,
    java: PathBuf,
}

impl JavaPtbTokenizer {
    /// `jar` is `stanford-corenlp-3.4.1.jar` (pycocoevalcap ships it under
    /// `tokenizer/`; see [`crate::caption::locate_jar`]).
    pub fn new(jar: impl Into<PathBuf>) -> Result<JavaPtbTokenizer, EvalError> {
        let jar = jar.into();
        if !jar.is_file() {
            return Err(EvalError::JarMissing { jar });
        }
        Ok(JavaPtbTokenizer {
            jar,
            java: PathBuf::from("java"),
        })
    }

    /// Uses this `java` executable instead of the one on `PATH`.
    pub fn with_java(mut self, java: impl Into<PathBuf>) -> JavaPtbTokenizer {
        self.java = java.into();
        self
    }

    pub fn jar(&self) -> &Path {
        &self.jar
    }

    /// The tokenizer's output line for each caption, punctuation included.
    ///
    /// Line breaks inside a caption are replaced by spaces first: `\n` as
    /// ptbtokenizer.py does, and also the other characters the lexer treats
    /// as line ends, which would otherwise shift every later line.
    pub fn raw_lines(&self, captions: &[&str]) -> Result<Vec<String>, EvalError> {
        if captions.is_empty() {
            return Ok(Vec::new());
        }
        let text = captions
            .iter()
            .map(|c| c.replace(['\n', '\r', '\u{2028}', '\u{2029}', '\u{b}', '\u{c}'], " "))
            .collect::<Vec<_>>()
            .join("\n");
        let input = TempFile::create(&text)?;
        let output = Command::new(&self.java)
            .arg("-cp")
            .arg(&self.jar)
            .arg("edu.stanford.nlp.process.PTBTokenizer")
            .arg("-preserveLines")
            .arg("-lowerCase")
            .arg(&input.path)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| EvalError::JavaSpawn {
                java: self.java.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(EvalError::JavaFailed {
                jar: self.jar.clone(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let stdout = String::from_utf8(output.stdout).map_err(|_| EvalError::JavaOutput {
            jar: self.jar.clone(),
            detail: "the tokenizer's output is not UTF-8".into(),
        })?;
        let lines: Vec<String> = stdout.split('\n').map(str::to_string).collect();
        if lines.len() < captions.len() {
            return Err(EvalError::JavaOutput {
                jar: self.jar.clone(),
                detail: format!(
                    "{} captions in, {} lines out; stderr: {}",
                    captions.len(),
                    lines.len(),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(lines.into_iter().take(captions.len()).collect())
    }

    /// Each caption as pycocoevalcap scores it (punctuation removed).
    pub fn tokenize_lines(&self, captions: &[&str]) -> Result<Vec<String>, EvalError> {
        Ok(self
            .raw_lines(captions)?
            .iter()
            .map(|l| strip_punctuation(l))
            .collect())
    }
}

/// A uniquely named file in the system temporary directory, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(text: &str) -> Result<TempFile, EvalError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("rgpt-eval-ptb-{}-{n}.txt", std::process::id()));
        std::fs::write(&path, text.as_bytes()).map_err(|source| EvalError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(TempFile { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: a leftover temp file is harmless.
        let _ = std::fs::remove_file(&self.path);
    }
}

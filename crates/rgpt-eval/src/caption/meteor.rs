//! METEOR 1.5 driven the way pycocoevalcap 1.2's `meteor/meteor.py` drives
//! it: one `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm` process
//! (started in the jar's directory, next to its `data/` paraphrase table),
//! one `SCORE ||| ref ||| ... ||| hyp` line per image answered by a line of
//! sufficient statistics, then one `EVAL ||| stats ||| ...` line answered by
//! each image's score and the final corpus score. The corpus number is the
//! jar's aggregate over all statistics, not the mean of the image scores.
//!
//! Like meteor.py, the hypothesis has `|||` removed and double spaces
//! collapsed once; references are sent as they are.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::{validate, Candidates, MetricScores, References};
use crate::error::EvalError;

/// A running METEOR 1.5 process. Reuse it for many calls: starting the JVM
/// and loading the paraphrase table is the expensive part.
pub struct Meteor {
    jar: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Collects the process's stderr for error messages.
    stderr: Option<JoinHandle<String>>,
}

impl Meteor {
    /// Starts METEOR with the `java` found on `PATH`.
    pub fn spawn(jar: &Path) -> Result<Meteor, EvalError> {
        Self::spawn_with_java(jar, Path::new("java"))
    }

    /// Starts METEOR with a given `java` executable.
    pub fn spawn_with_java(jar: &Path, java: &Path) -> Result<Meteor, EvalError> {
        if !jar.is_file() {
            return Err(EvalError::JarMissing {
                jar: jar.to_path_buf(),
            });
        }
        let jar = jar.canonicalize().map_err(|source| EvalError::Io {
            path: jar.to_path_buf(),
            source,
        })?;
        let dir = jar.parent().unwrap_or(Path::new("."));
        let _span = tracing::info_span!("meteor_spawn", jar = %jar.display()).entered();
        let mut child = Command::new(java)
            .arg("-jar")
            .arg("-Xmx2G")
            .arg(&jar)
            .args(["-", "-", "-stdio", "-l", "en", "-norm"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| EvalError::JavaSpawn {
                java: java.to_path_buf(),
                source,
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with all three piped; reported rather than assumed.
            let _ = child.kill();
            return Err(EvalError::MeteorProtocol {
                jar,
                detail: "the process's pipes were not available".into(),
                stderr: String::new(),
            });
        };
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            // A read error only truncates the diagnostics.
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(Meteor {
            jar,
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr: Some(stderr),
        })
    }

    pub fn jar(&self) -> &Path {
        &self.jar
    }

    /// METEOR of tokenized captions: the jar's corpus score and each image's,
    /// like `Meteor().compute_score`.
    pub fn compute(
        &mut self,
        refs: &References,
        cands: &Candidates,
    ) -> Result<MetricScores<f64>, EvalError> {
        validate(refs, cands)?;
        let _span = tracing::info_span!("meteor", images = cands.len()).entered();
        let mut eval_line = String::from("EVAL");
        for (id, cand) in cands {
            let hypothesis = cand.replace("|||", "").replace("  ", " ");
            let fields = refs[id]
                .iter()
                .map(String::as_str)
                .chain([hypothesis.as_str()]);
            let mut line = String::from("SCORE");
            for field in fields {
                if field.contains(['\n', '\r']) {
                    return Err(EvalError::MeteorInput {
                        id: id.clone(),
                        detail: "a caption contains a line break, which ends a protocol line"
                            .into(),
                    });
                }
                line.push_str(" ||| ");
                line.push_str(field);
            }
            self.send(&line)?;
            let stats = self.receive()?;
            eval_line.push_str(" ||| ");
            eval_line.push_str(stats.trim());
        }
        self.send(&eval_line)?;
        let mut per_image = std::collections::BTreeMap::new();
        for id in cands.keys() {
            per_image.insert(id.clone(), self.receive_score()?);
        }
        let corpus = self.receive_score()?;
        Ok(MetricScores { corpus, per_image })
    }

    fn send(&mut self, line: &str) -> Result<(), EvalError> {
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("stdin already closed")),
        };
        written.map_err(|e| self.broken(format!("writing to METEOR failed: {e}")))
    }

    fn receive(&mut self) -> Result<String, EvalError> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(self.broken("METEOR closed its output".into())),
            Ok(_) => Ok(line),
            Err(e) => Err(self.broken(format!("reading from METEOR failed: {e}"))),
        }
    }

    fn receive_score(&mut self) -> Result<f64, EvalError> {
        let line = self.receive()?;
        line.trim()
            .parse::<f64>()
            .map_err(|_| self.broken(format!("expected a score, got {:?}", line.trim())))
    }

    /// Ends the process and returns an error carrying its stderr.
    fn broken(&mut self, detail: String) -> EvalError {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        EvalError::MeteorProtocol {
            jar: self.jar.clone(),
            detail,
            stderr,
        }
    }
}

impl Drop for Meteor {
    fn drop(&mut self) {
        // Closing stdin ends the jar's read loop; kill in case it does not.
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(handle) = self.stderr.take() {
            let _ = handle.join();
        }
    }
}

use std::path::PathBuf;

/// Everything that can go wrong in evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "{count} predicted id(s) have no reference captions (first: {}); \
         score only the ids present in both with --allow-missing (`allow_missing` in code)",
        .first.join(", ")
    )]
    MissingReferences { count: usize, first: Vec<String> },

    #[error("id {id:?} has an empty list of reference captions")]
    NoReferences { id: String },

    #[error(
        "references and candidates must cover the same ids: {only_refs} only in references, \
         {only_candidates} only in candidates (first: {})",
        .first.join(", ")
    )]
    IdMismatch {
        only_refs: usize,
        only_candidates: usize,
        first: Vec<String>,
    },

    #[error("no captions to score")]
    NothingToScore,

    #[error("{jar} does not exist")]
    JarMissing { jar: PathBuf },

    #[error(
        "{jar_name} not found; set {env} or install pycocoevalcap==1.2 (scripts/setup.sh does, \
         into .venv); looked in: {}",
        .searched.join("; ")
    )]
    JarNotFound {
        jar_name: &'static str,
        env: &'static str,
        /// Each place looked in, or why a place was not there to look in.
        searched: Vec<String>,
    },

    #[error("cannot run {java} (is a Java runtime installed and on PATH?): {source}")]
    JavaSpawn {
        java: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("java -jar {jar} exited with {status}; its stderr:\n{stderr}")]
    JavaFailed {
        jar: PathBuf,
        status: String,
        stderr: String,
    },

    #[error("unexpected output from {jar}: {detail}")]
    JavaOutput { jar: PathBuf, detail: String },

    #[error("caption of id {id:?} cannot be sent to METEOR: {detail}")]
    MeteorInput { id: String, detail: String },

    #[error("METEOR ({jar}) broke off: {detail}; its stderr:\n{stderr}")]
    MeteorProtocol {
        jar: PathBuf,
        detail: String,
        stderr: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{count} question(s) have no answer in {path} (first: {first:?})")]
    MissingAnswers {
        path: PathBuf,
        count: usize,
        first: Vec<u64>,
    },

    #[error(
        "{path} holds `{task}` samples, which are not a {expected:?} task: evaluate it as its \
         own task"
    )]
    TaskMismatch {
        path: PathBuf,
        task: String,
        expected: crate::TaskKind,
    },

    // Task runners (feature `runner`).
    #[cfg(feature = "runner")]
    #[error(transparent)]
    Model(#[from] rgpt_model::ModelError),

    #[cfg(feature = "runner")]
    #[error(transparent)]
    Data(#[from] rgpt_data::DataError),

    #[error("sample {id}: {message}")]
    Sample { id: String, message: String },

    #[error("image {path}: {message}")]
    Image { path: PathBuf, message: String },

    #[error("{path}:{line}: malformed prediction: {message}")]
    Prediction {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

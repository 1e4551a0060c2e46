use std::path::PathBuf;

/// Errors of the data crate; each names the file (and line, for JSON lines)
/// or the sample at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed JSON: {message}")]
    JsonLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: malformed {what}: {message}")]
    Format {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("sample {id}: {message}")]
    Sample { id: String, message: String },
    #[error("sample {id}: region {index}: {source}")]
    Region {
        id: String,
        index: usize,
        #[source]
        source: rgpt_region::RegionError,
    },
    #[error("sample {id}: image {path}: {message}")]
    Image {
        id: String,
        path: PathBuf,
        message: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A build that kept no record: the output is left as it was.
    #[error(
        "no samples to write, so {} is left as it was; {}",
        .out.display(),
        .skips.trim_end().replace('\n', ";")
    )]
    NothingBuilt { out: PathBuf, skips: String },
}

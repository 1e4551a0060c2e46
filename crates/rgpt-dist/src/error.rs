use thiserror::Error;

#[derive(Debug, Error)]
pub enum DistError {
    /// A collective or the rendezvous failed (a peer gone, a timeout):
    /// c10d's own first line, after the operation's name.
    #[error("{0}")]
    C10d(String),
    #[error(
        "port {port} on {host} is already in use; choose another with --master-port \
         (or MASTER_PORT), or stop the run that holds it"
    )]
    PortInUse { host: String, port: u16 },
    /// A launcher variable that is missing or malformed.
    #[error("{variable}: {message}")]
    Env {
        variable: &'static str,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("rank {rank} failed ({status}); the other ranks were stopped")]
    RankFailed { rank: usize, status: String },
}

pub type Result<T> = std::result::Result<T, DistError>;

//! `rgpt launch`: torchrun's job for one machine of a run. It starts
//! `nproc` copies of a program with the variables a rank reads (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`; `OMP_NUM_THREADS=1` unless set, as
//! torchrun does), hands every line they print to the caller with its
//! rank, and, like torchrun, stops the others when one fails and names it.
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::error::{DistError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Processes on this machine (one per GPU).
    pub nproc: usize,
    pub nnodes: usize,
    /// This machine's place among the `nnodes`.
    pub node_rank: usize,
    /// Where rank 0 (on node 0) serves the rendezvous.
    pub master_addr: String,
    pub master_port: u16,
}

/// Which of a rank's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How long stopped ranks get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// Runs `program args` as this machine's ranks until all exit; `on_line`
/// gets every line each prints (global rank, stream, text). The first rank
/// to fail stops the others and is the error.
pub fn launch(
    program: &Path,
    args: &[OsString],
    config: &LaunchConfig,
    mut on_line: impl FnMut(usize, Stream, &str),
) -> Result<()> {
    let invalid = |message: String| Err(DistError::Invalid(message));
    if config.nproc == 0 || config.nnodes == 0 {
        return invalid("--nproc and --nnodes must be at least 1".into());
    }
    if config.node_rank >= config.nnodes {
        return invalid(format!(
            "--node-rank {} is not below --nnodes {}",
            config.node_rank, config.nnodes
        ));
    }
    let world = config.nproc * config.nnodes;
    let (lines, received) = channel::<(usize, Stream, String)>();
    let mut ranks = Vec::with_capacity(config.nproc);
    for local in 0..config.nproc {
        let rank = config.node_rank * config.nproc + local;
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", config.nproc.to_string())
            .env("GROUP_RANK", config.node_rank.to_string())
            .env("MASTER_ADDR", &config.master_addr)
            .env("MASTER_PORT", config.master_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            command.env("OMP_NUM_THREADS", "1");
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                stop(&mut ranks);
                return invalid(format!("cannot start {}: {e}", program.display()));
            }
        };
        forward(child.stdout.take(), rank, Stream::Stdout, lines.clone());
        forward(child.stderr.take(), rank, Stream::Stderr, lines.clone());
        ranks.push((rank, child, None::<ExitStatus>));
    }
    drop(lines);
    let mut failure = None;
    loop {
        match received.recv_timeout(Duration::from_millis(50)) {
            Ok((rank, stream, line)) => {
                on_line(rank, stream, &line);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) if ranks.iter().all(|r| r.2.is_some()) => break,
            Err(_) => {}
        }
        for (rank, child, status) in &mut ranks {
            if status.is_none() {
                if let Ok(Some(exit)) = child.try_wait() {
                    *status = Some(exit);
                    if !exit.success() && failure.is_none() {
                        failure = Some((*rank, exit));
                    }
                }
            }
        }
        if failure.is_some() {
            stop(&mut ranks);
        }
        if ranks.iter().all(|r| r.2.is_some()) {
            // Pass on what is still in the pipes, then finish.
            while let Ok((rank, stream, line)) = received.recv_timeout(Duration::from_secs(1)) {
                on_line(rank, stream, &line);
            }
            break;
        }
    }
    match failure {
        None => Ok(()),
        Some((rank, status)) => Err(DistError::RankFailed {
            rank,
            status: describe(status),
        }),
    }
}

/// Sends each line of `pipe` to `lines`, tagged.
fn forward(
    pipe: Option<impl Read + Send + 'static>,
    rank: usize,
    stream: Stream,
    lines: Sender<(usize, Stream, String)>,
) {
    let Some(pipe) = pipe else { return };
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buffer = Vec::new();
        // Progress bars redraw with `\r`: each redraw is a line too.
        while reader.read_until(b'\n', &mut buffer).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&buffer);
            for part in text.trim_end_matches(['\n', '\r']).split('\r') {
                if !part.is_empty() && lines.send((rank, stream, part.to_string())).is_err() {
                    return;
                }
            }
            buffer.clear();
        }
    });
}

/// SIGTERM to every rank still running, then SIGKILL to those still
/// there after the grace period.
fn stop(ranks: &mut [(usize, Child, Option<ExitStatus>)]) {
    for (_, child, status) in ranks.iter_mut() {
        if status.is_none() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: signalling our own child by its pid.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
    let deadline = Instant::now() + GRACE;
    for (_, child, status) in ranks.iter_mut() {
        while status.is_none() {
            match child.try_wait() {
                Ok(Some(exit)) => *status = Some(exit),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    *status = child.wait().ok();
                    break;
                }
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

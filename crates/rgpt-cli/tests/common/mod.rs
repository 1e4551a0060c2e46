//! Running the `rgpt` binary from the workspace root, for the CLI tests.
#![allow(dead_code)] // each test file uses a different subset

pub mod server;

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The workspace root, where fixture paths in the tests start.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `rgpt ARGS...` in the workspace root.
pub fn rgpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("rgpt runs")
}

/// Asserts success (showing stderr otherwise) and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Runs `rgpt ARGS...`, asserts it fails, and that its stderr says `says`.
pub fn fails(args: &[&str], says: &str) {
    let out = rgpt(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(says), "{says:?} not in {stderr}");
}

/// Runs `rgpt chat --model MODEL --image MODEL/image.png ARGS...` with
/// `script` typed on its stdin.
pub fn chat(model: &Path, args: &[&str], script: impl AsRef<[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .arg("chat")
        .arg("--model")
        .arg(model)
        .arg("--image")
        .arg(model.join("image.png"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rgpt runs");
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(script.as_ref())
        .expect("rgpt reads its stdin");
    child.wait_with_output().expect("rgpt ends")
}

/// A loopback port free right now (for a process told to listen on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

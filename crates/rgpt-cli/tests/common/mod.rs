//! Running the `rgpt` binary from the workspace root, for the CLI tests.
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::process::{Command, Output};

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

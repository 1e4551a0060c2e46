//! `rgpt chat` driven through its stdin as a user would type: regions are
//! added with `/region`, answers stream after each question, mistakes get
//! one `error:` line and the session goes on, `/quit` ends it.
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn chat(script: impl AsRef<[u8]>) -> (bool, String, String) {
    let out = common::chat(
        &fixture("rgpt-tiny"),
        &["--max-new-tokens", "4", "--ignore-eos"],
        script,
    );
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_session_with_regions_mistakes_and_reset() {
    let (ok, stdout, stderr) = chat(
        "/region box:2,3,20,18\n\
         What is this?\n\
         What is <region>?\n\
         /region box:100,100,200,200\n\
         /region poly:22,4,38,6,30,26\n\
         And <region>?\n\
         /frobnicate\n\
         /reset\n\
         Describe the image.\n\
         /quit\n\
         This line is never read.\n",
    );
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // region 0 added, answer, region 1 added, answer, reset, answer.
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[0].starts_with("(region 0 added"), "{stdout}");
    assert!(lines[2].starts_with("(region 1 added"), "{stdout}");
    assert!(
        lines[4].starts_with("(conversation and regions cleared"),
        "{stdout}"
    );
    for answer in [lines[1], lines[3], lines[5]] {
        assert!(!answer.trim().is_empty(), "an answer is printed: {stdout}");
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(errors[0].contains("0 <region> placeholder(s) but 1 region(s)"));
    assert!(errors[1].contains("/region `box:100,100,200,200`: region 1"));
    assert!(errors[1].contains("outside"));
    assert!(errors[2].contains("unknown command `/frobnicate`"));
}

#[test]
fn a_line_that_is_not_utf8_costs_that_line() {
    // It used to end the session.
    let (ok, stdout, stderr) =
        chat(b"/region box:2,3,20,18\n\xff\xfe bad bytes\nWhat is <region>?\n");
    assert!(ok, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not UTF-8"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "region added, then the answer: {stdout}");
    assert!(!lines[1].trim().is_empty(), "{stdout}");
}

#[test]
fn a_bad_starting_region_is_a_clean_error() {
    let model = fixture("rgpt-tiny");
    let out = Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .arg("chat")
        .arg("--model")
        .arg(&model)
        .arg("--image")
        .arg(model.join("image.png"))
        .args(["--region", "box:1,1,5,5", "--region", "box:500,500,600,600"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("--region `box:500,500,600,600`: region 1"),
        "{stderr}"
    );
}

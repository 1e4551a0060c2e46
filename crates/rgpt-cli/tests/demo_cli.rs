//! `rgpt demo`: a bad config is refused before any work starts.
mod common;

use common::rgpt;

#[test]
fn a_demo_config_with_an_unknown_task_is_refused_before_any_work() {
    let dir = std::env::temp_dir().join(format!("rgpt-demo-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(common::root().join("configs/demo-quick.yaml")).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, text.replace("synth-rec:", "synth-recc:")).unwrap();
    let out = rgpt(&[
        "demo",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("synth-recc"), "{stderr}");
    assert!(
        !dir.join("run/world").exists(),
        "work started before the check"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

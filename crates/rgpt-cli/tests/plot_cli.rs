//! `rgpt plot` on a run directory: the figures written where asked and
//! their paths printed, and a run without metrics refused by name.
mod common;

use common::{ok, rgpt};

#[test]
fn plots_a_run_directory() {
    let dir = std::env::temp_dir().join(format!("rgpt-plot-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let metrics: String = (1..=6)
        .map(|step| {
            format!(
                "{{\"step\":{step},\"total_steps\":6,\"loss\":{},\"lr\":{},\"grad_norm\":0.5,\
                 \"samples_per_s\":4.0,\"tokens_per_s\":300.0,\"elapsed_s\":{step}.0,\"memory_mb\":700.0}}\n",
                3.0 / step as f64,
                1e-3 * step as f64 / 6.0
            )
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let run = dir.to_str().unwrap();

    let stdout = ok(&rgpt(&["plot", run]));
    let written: Vec<&str> = stdout.lines().collect();
    let png = dir.join("loss_lr.png");
    let svg = dir.join("loss_lr.svg");
    assert_eq!(written, [png.to_str().unwrap(), svg.to_str().unwrap()]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    let out = dir.join("figures");
    let stdout = ok(&rgpt(&["plot", run, "--out", out.to_str().unwrap()]));
    assert!(stdout.contains(out.join("loss_lr.png").to_str().unwrap()));
    assert!(out.join("loss_lr.svg").is_file());

    std::fs::remove_file(dir.join("metrics.jsonl")).unwrap();
    let refused = rgpt(&["plot", run]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(dir.join("metrics.jsonl").to_str().unwrap()),
        "{stderr}"
    );
}

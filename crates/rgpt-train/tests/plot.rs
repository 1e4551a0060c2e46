//! `plot_run` on a synthetic `metrics.jsonl`: a PNG that decodes at the
//! figure's size and an SVG with the titles and axis labels, extra panels
//! from the caller, and errors that name the file and line at fault.
use std::path::PathBuf;

use rgpt_train::plot::{plot_run, Panel, Series, TickFormat, PANEL_HEIGHT, TITLE_HEIGHT, WIDTH};

/// A fresh run directory holding `metrics` as its `metrics.jsonl`.
fn run_dir(tag: &str, metrics: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-plot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    dir
}

/// Forty steps of a cosine-ish schedule with a falling loss, and an
/// evaluation every ten steps, as the trainer and an evaluator write them.
fn synthetic_metrics() -> String {
    let mut text = String::new();
    for step in 1..=40u64 {
        let lr = 3e-4 * (step as f64 / 4.0).min(1.0) * (1.0 - step as f64 / 45.0);
        let loss = 4.0 / (1.0 + step as f64 / 8.0) + 0.05 * (step as f64).sin();
        text += &format!(
            "{{\"step\":{step},\"total_steps\":40,\"loss\":{loss},\"lr\":{lr},\"grad_norm\":1.0,\
             \"samples_per_s\":8.0,\"tokens_per_s\":900.0,\"elapsed_s\":{step}.0,\"memory_mb\":812.5}}\n"
        );
        if step % 10 == 0 {
            text += &format!(
                "{{\"step\":{step},\"eval\":{{\"accuracy\":{}}}}}\n",
                step as f64 / 50.0
            );
        }
    }
    text
}

#[test]
fn writes_a_png_and_an_svg_of_the_curves() {
    let dir = run_dir("ok", &synthetic_metrics());
    let extra = Panel {
        title: "region accuracy".into(),
        x_label: "step".into(),
        y_label: "accuracy".into(),
        ticks: TickFormat::Decimal,
        series: vec![Series {
            name: "refcocog".into(),
            points: vec![(10, 0.2), (20, 0.35), (40, 0.5)],
        }],
    };
    let plotted = plot_run(&dir, None, vec![extra]).unwrap();
    assert_eq!(plotted.png, dir.join("loss_lr.png"));
    assert_eq!(plotted.svg, dir.join("loss_lr.svg"));

    // Loss, learning rate, the log's evaluation panel and the extra one.
    let png = image::open(&plotted.png).unwrap();
    assert_eq!(
        (png.width(), png.height()),
        (WIDTH, TITLE_HEIGHT + 4 * PANEL_HEIGHT)
    );
    let rgb = png.to_rgb8();
    let inked = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(inked > 10_000, "the figure is nearly blank: {inked} pixels");

    let svg = std::fs::read_to_string(&plotted.svg).unwrap();
    let texts = svg_texts(&svg);
    for text in [
        "training run rgpt-plot-ok",
        "training loss",
        "step",
        "loss",
        "learning rate",
        "evaluation",
        "accuracy",
        "region accuracy",
        "refcocog",
    ] {
        assert!(
            texts.iter().any(|t| t.starts_with(text)),
            "the SVG lacks `{text}`: {texts:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t.ends_with("e-4")),
        "lr ticks in scientific notation: {texts:?}"
    );
    assert!(!dir.join("loss_lr.png.tmp").exists() && !dir.join("loss_lr.svg.tmp").exists());
}

/// The contents of the SVG's `<text>` elements, trimmed.
fn svg_texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>'))
        .filter_map(|(_, rest)| rest.split_once("</text>"))
        .map(|(text, _)| text.trim())
        .collect()
}

#[test]
fn writes_into_another_directory_when_asked() {
    let dir = run_dir("out", &synthetic_metrics());
    let out = dir.join("figures/nested");
    let plotted = plot_run(&dir, Some(&out), Vec::new()).unwrap();
    assert_eq!(plotted.png, out.join("loss_lr.png"));
    let png = image::open(&plotted.png).unwrap();
    // Loss, learning rate and the log's evaluation panel.
    assert_eq!(png.height(), TITLE_HEIGHT + 3 * PANEL_HEIGHT);
    assert!(!dir.join("loss_lr.png").exists());
}

#[test]
fn a_missing_file_is_named() {
    let dir = run_dir("missing", "");
    std::fs::remove_file(dir.join("metrics.jsonl")).unwrap();
    let err = plot_run(&dir, None, Vec::new()).unwrap_err().to_string();
    let path = dir.join("metrics.jsonl");
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn a_malformed_line_is_named_with_its_number() {
    let text = synthetic_metrics();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{\"step\":3,\"loss\":2.0,");
    let dir = run_dir("malformed", &lines.join("\n"));
    let err = plot_run(&dir, None, Vec::new()).unwrap_err().to_string();
    let expected = format!("{}, line 3: ", dir.join("metrics.jsonl").display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!dir.join("loss_lr.png").exists());
}

#[test]
fn an_empty_log_has_nothing_to_draw() {
    let dir = run_dir("empty", "\n");
    let err = plot_run(&dir, None, Vec::new()).unwrap_err().to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("no step record"),
        "{err}"
    );
}

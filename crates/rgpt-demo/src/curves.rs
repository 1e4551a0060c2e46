//! The demo's learning curves as a picture (`curves.png`, `curves.svg`):
//! held-out shape classification and REC accuracy against the step and
//! against training time, the stages end to end, as the issue asks them to
//! be shown.
use std::path::Path;

use rgpt_train::plot::{Figure, Panel, Plotted, Series, TickFormat};

use crate::run_dir::read_jsonl;
use crate::{CurvePoint, DemoError, DemoTargets, StageReport};

/// The names `write_curve_figure` writes into the run directory.
pub const PNG_NAME: &str = "curves.png";
pub const SVG_NAME: &str = "curves.svg";

/// One stage's report and the held-out points scored during it.
pub struct StageCurve<'a> {
    pub report: &'a StageReport,
    pub points: Vec<CurvePoint>,
}

/// Both panels, every stage's steps and seconds continuing from where the
/// previous stage ended. The time axis starts at `start_seconds`, the
/// training that came before the first stage (the tower's pre-training).
/// `targets`, when given, are drawn as flat lines across each panel.
pub fn curve_figure(
    stages: &[StageCurve<'_>],
    start_seconds: f64,
    targets: Option<DemoTargets>,
) -> Figure {
    let names: Vec<&str> = stages.iter().map(|s| s.report.name.as_str()).collect();
    let mut by_step = [series("shape classification"), series("REC")];
    let mut by_time = by_step.clone();
    let (mut steps_before, mut seconds_before) = (0, start_seconds);
    for stage in stages {
        for point in &stage.points {
            let step = steps_before + point.step;
            let second = (seconds_before + point.train_seconds).round() as u64;
            for (i, accuracy) in [point.region_cls_acc, point.rec_acc]
                .into_iter()
                .enumerate()
            {
                by_step[i].points.push((step, 100.0 * accuracy));
                by_time[i].points.push((second, 100.0 * accuracy));
            }
        }
        steps_before += stage.report.steps;
        seconds_before += stage.report.seconds;
    }
    let panel = |title: &str, x_label: &str, series: [Series; 2]| {
        let mut series = Vec::from(series);
        let xs = series[0].points.iter().map(|p| p.0);
        if let (Some(targets), Some(first), Some(last)) = (targets, xs.clone().min(), xs.max()) {
            for (name, target) in [
                ("shape target", targets.region_cls_acc),
                ("REC target", targets.rec_acc),
            ] {
                series.push(Series {
                    name: format!("{name} ({:.0}%)", 100.0 * target),
                    points: vec![(first, 100.0 * target), (last, 100.0 * target)],
                });
            }
        }
        Panel {
            title: title.into(),
            x_label: x_label.into(),
            y_label: "held-out accuracy (%)".into(),
            ticks: TickFormat::Decimal,
            series,
        }
    };
    Figure {
        title: format!("demo learning curves ({})", names.join(", then ")),
        panels: vec![
            panel("against the step", "step, all stages", by_step),
            panel(
                "against training time",
                "training seconds, tower pre-training included",
                by_time,
            ),
        ],
    }
}

fn series(name: &str) -> Series {
    Series {
        name: name.into(),
        points: Vec::new(),
    }
}

/// Draws the curves of the stages under `run` that have a `curve.jsonl`
/// (an ablation run's shared stages have none, and add only their steps
/// and seconds). `None` when no stage has one.
pub fn write_curve_figure(
    run: &Path,
    reports: &[StageReport],
    start_seconds: f64,
    targets: Option<DemoTargets>,
) -> Result<Option<Plotted>, DemoError> {
    let mut stages = Vec::with_capacity(reports.len());
    for report in reports {
        let path = run.join(&report.name).join("curve.jsonl");
        let points = if path.is_file() {
            latest_per_step(read_jsonl(&path)?)
        } else {
            Vec::new()
        };
        stages.push(StageCurve { report, points });
    }
    if stages.iter().all(|s| s.points.is_empty()) {
        return Ok(None);
    }
    let figure = curve_figure(&stages, start_seconds, targets);
    let plotted = Plotted {
        png: run.join(PNG_NAME),
        svg: run.join(SVG_NAME),
    };
    figure.write_png(&plotted.png)?;
    figure.write_svg(&plotted.svg)?;
    Ok(Some(plotted))
}

/// A resumed stage scores again the steps after its last checkpoint and
/// appends them, as `metrics.jsonl` repeats them; as there, the later
/// record (the run that went on) wins, and the points come in step order.
fn latest_per_step(points: Vec<CurvePoint>) -> Vec<CurvePoint> {
    let by_step: std::collections::BTreeMap<u64, CurvePoint> =
        points.into_iter().map(|p| (p.step, p)).collect();
    by_step.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, steps: u64, seconds: f64) -> StageReport {
        StageReport {
            name: name.into(),
            steps,
            seconds,
            final_loss: 0.5,
            shared_from: None,
        }
    }

    fn point(stage: &str, step: u64, train_seconds: f64, shape: f64, rec: f64) -> CurvePoint {
        CurvePoint {
            stage: stage.into(),
            step,
            train_seconds,
            loss: None,
            region_cls_acc: shape,
            rec_acc: rec,
        }
    }

    #[test]
    fn a_resumed_stage_keeps_the_later_score_of_a_repeated_step() {
        let points = latest_per_step(vec![
            point("finetune", 50, 60.0, 0.5, 0.25),
            point("finetune", 100, 120.0, 0.75, 0.25),
            point("finetune", 100, 121.0, 0.875, 0.5),
            point("finetune", 150, 180.0, 0.9375, 0.5),
        ]);
        let kept: Vec<(u64, f64)> = points.iter().map(|p| (p.step, p.region_cls_acc)).collect();
        assert_eq!(kept, vec![(50, 0.5), (100, 0.875), (150, 0.9375)]);
    }

    #[test]
    fn each_stage_continues_where_the_previous_one_ended() {
        let (language, finetune) = (
            report("language", 250, 178.0),
            report("finetune", 200, 214.0),
        );
        let stages = [
            StageCurve {
                report: &language,
                points: vec![point("language", 250, 178.0, 0.25, 0.375)],
            },
            StageCurve {
                report: &finetune,
                points: vec![
                    point("finetune", 100, 107.4, 0.875, 0.25),
                    point("finetune", 200, 214.0, 0.9375, 0.5),
                ],
            },
        ];
        let targets = DemoTargets {
            region_cls_acc: 0.9,
            rec_acc: 0.85,
        };
        let figure = curve_figure(&stages, 159.0, Some(targets));
        let [by_step, by_time] = &figure.panels[..] else {
            panic!("two panels");
        };
        assert_eq!(by_step.series[0].name, "shape classification");
        assert_eq!(
            by_step.series[0].points,
            vec![(250, 25.0), (350, 87.5), (450, 93.75)]
        );
        assert_eq!(
            by_step.series[1].points,
            vec![(250, 37.5), (350, 25.0), (450, 50.0)]
        );
        // 159 s of tower, then 178 s of language, then the stage's own.
        let seconds: Vec<u64> = by_time.series[0].points.iter().map(|p| p.0).collect();
        assert_eq!(seconds, vec![337, 444, 551]);
        assert!(figure.title.contains("language, then finetune"));
        // The targets span each panel's x range.
        assert_eq!(by_step.series[2].name, "shape target (90%)");
        assert_eq!(by_step.series[2].points, vec![(250, 90.0), (450, 90.0)]);
        assert_eq!(by_time.series[3].name, "REC target (85%)");
        assert_eq!(by_time.series[3].points, vec![(337, 85.0), (551, 85.0)]);
        let without = curve_figure(&stages, 159.0, None);
        assert_eq!(without.panels[0].series.len(), 2);
    }
}

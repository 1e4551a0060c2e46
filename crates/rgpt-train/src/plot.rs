//! Training curves: loss and learning rate against the step from a run's
//! `metrics.jsonl` (and a panel of its evaluation series, when it has any),
//! one panel each, stacked in one figure written as PNG and SVG.
//!
//! Text is set in DejaVu Sans embedded in the binary (plotters'
//! `ab_glyph`), so drawing needs no system font library or font file.
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::MetricsLog;
use crate::TrainError;

/// The figure's width in pixels.
pub const WIDTH: u32 = 960;
/// The height of one panel in pixels.
pub const PANEL_HEIGHT: u32 = 340;
/// The height of the figure's title band in pixels.
pub const TITLE_HEIGHT: u32 = 40;

/// The names `plot_run` writes into its output directory.
pub const PNG_NAME: &str = "loss_lr.png";
pub const SVG_NAME: &str = "loss_lr.svg";

/// How a panel writes the numbers on its y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickFormat {
    /// Decimals, as many as the axis's span needs.
    Decimal,
    /// `3.0e-4`: for learning rates and other small magnitudes.
    Scientific,
}

/// One named curve: a value against the optimiser step (or what its
/// panel's `x_label` says).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(u64, f64)>,
}

/// One panel of a figure: its curves share the axes; a legend names them
/// unless the panel holds one curve named like its y axis.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// What the x values count: the optimiser step, unless a panel says
    /// otherwise (training seconds, say).
    pub x_label: String,
    pub y_label: String,
    pub ticks: TickFormat,
    pub series: Vec<Series>,
}

/// Panels stacked top to bottom under a title.
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
}

/// The files `plot_run` wrote.
#[derive(Debug, Clone)]
pub struct Plotted {
    pub png: PathBuf,
    pub svg: PathBuf,
}

/// Draws `run_dir/metrics.jsonl` into `loss_lr.png` and `loss_lr.svg` in
/// `out_dir` (the run directory when `None`): the loss and learning-rate
/// panels, one of evaluation series if the log has any, then `extra`
/// panels (accuracy from an outside evaluation, say) in the order given.
pub fn plot_run(
    run_dir: &Path,
    out_dir: Option<&Path>,
    extra: Vec<Panel>,
) -> Result<Plotted, TrainError> {
    let metrics = run_dir.join("metrics.jsonl");
    let log = MetricsLog::read(&metrics)?;
    if log.steps.is_empty() {
        return Err(TrainError::Plot {
            path: metrics,
            message: "it holds no step record".into(),
        });
    }
    // The run's own name (`run`, not `/long/path/to/run`) unless it has
    // none, as for `.`.
    let name = run_dir.file_name().map_or_else(
        || run_dir.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut figure = training_figure(&log, &format!("training run {name}"));
    figure.panels.extend(extra);
    let out = out_dir.unwrap_or(run_dir);
    std::fs::create_dir_all(out).map_err(|source| TrainError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let plotted = Plotted {
        png: out.join(PNG_NAME),
        svg: out.join(SVG_NAME),
    };
    figure.write_png(&plotted.png)?;
    figure.write_svg(&plotted.svg)?;
    Ok(plotted)
}

/// The loss and learning-rate panels of a log, and one panel holding all
/// its evaluation series when it has any.
pub fn training_figure(log: &MetricsLog, title: &str) -> Figure {
    let mut panels = vec![
        Panel {
            title: "training loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            ticks: TickFormat::Decimal,
            series: vec![Series {
                name: "loss".into(),
                points: log.steps.iter().map(|p| (p.step, p.loss)).collect(),
            }],
        },
        Panel {
            title: "learning rate".into(),
            x_label: "step".into(),
            y_label: "learning rate".into(),
            ticks: TickFormat::Scientific,
            series: vec![Series {
                name: "learning rate".into(),
                points: log.steps.iter().map(|p| (p.step, p.lr)).collect(),
            }],
        },
    ];
    if !log.eval.is_empty() {
        panels.push(Panel {
            title: "evaluation".into(),
            x_label: "step".into(),
            ticks: TickFormat::Decimal,
            // A lone series names the axis; several get a legend.
            y_label: match log.eval.keys().collect::<Vec<_>>()[..] {
                [name] => name.clone(),
                _ => "value".into(),
            },
            series: log
                .eval
                .iter()
                .map(|(name, points)| Series {
                    name: name.clone(),
                    points: points.clone(),
                })
                .collect(),
        });
    }
    Figure {
        title: title.into(),
        panels,
    }
}

impl Figure {
    /// `(width, height)` in pixels.
    pub fn size(&self) -> (u32, u32) {
        (
            WIDTH,
            TITLE_HEIGHT + PANEL_HEIGHT * self.panels.len().max(1) as u32,
        )
    }

    /// Writes the figure as a PNG, atomically.
    pub fn write_png(&self, path: &Path) -> Result<(), TrainError> {
        let fail = |message: String| TrainError::Plot {
            path: path.to_path_buf(),
            message,
        };
        let (width, height) = self.size();
        let mut pixels = vec![0u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
            self.draw(root).map_err(fail)?;
        }
        let image = image::RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| fail("the pixel buffer does not match the size".into()))?;
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| fail(e.to_string()))?;
        rgpt_weights::save::write_atomic(path, png.get_ref())?;
        Ok(())
    }

    /// Writes the figure as an SVG, atomically.
    pub fn write_svg(&self, path: &Path) -> Result<(), TrainError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw(root).map_err(|message| TrainError::Plot {
                path: path.to_path_buf(),
                message,
            })?;
        }
        rgpt_weights::save::write_atomic(path, svg.as_bytes())?;
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        register_fonts()?;
        let text = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(text)?;
        let body = root.titled(&self.title, ("sans-serif", 22)).map_err(text)?;
        let areas = body.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, area).map_err(text)?;
        }
        root.present().map_err(text)
    }
}

/// Line colours, matplotlib's first "tab10" ones, so the curves look like
/// the plots readers know from Python training scripts.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Curves with this few points also get a dot at each, so sparse
/// evaluation series and very short runs stay visible.
const MARKED_BELOW: usize = 40;

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (steps, values) = ranges(panel);
    let corner = legend_corner(panel, &steps, &values);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(84)
        .build_cartesian_2d(steps, values.clone())?;
    let format = panel.ticks;
    let span = values.end - values.start;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .y_label_formatter(&|v| tick_label(*v, format, span))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(&series.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        if series.points.len() < MARKED_BELOW {
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, colour.filled())),
            )?;
        }
    }
    // One curve named like its axis needs no legend.
    let named_by_axis = matches!(&panel.series[..], [only] if only.name == panel.y_label);
    if !panel.series.is_empty() && !named_by_axis {
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// Where the legend hides the least of the curves: of the nine places
/// plotters offers, the one whose box (about the legend's size) the
/// curves, sampled along every segment, cross least. Ties go to the lower
/// right when the curves finish high (accuracy rising), else the upper
/// right (loss falling), then the other corners, then the edges' middles.
fn legend_corner(panel: &Panel, steps: &Range<u64>, values: &Range<f64>) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let middle = (values.start + values.end) / 2.0;
    let ends: Vec<f64> = panel
        .series
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    let mean = ends.iter().sum::<f64>() / ends.len().max(1) as f64;
    let rising = !ends.is_empty() && mean > middle;
    let (first, second) = if rising {
        (LowerRight, UpperRight)
    } else {
        (UpperRight, LowerRight)
    };

    // Sample points in the unit square (x right, y up).
    let (x0, x_span) = (steps.start as f64, (steps.end - steps.start).max(1) as f64);
    let (y0, y_span) = (values.start, (values.end - values.start).max(f64::EPSILON));
    let unit = |(x, y): (u64, f64)| ((x as f64 - x0) / x_span, (y - y0) / y_span);
    let mut samples = Vec::new();
    for series in &panel.series {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&p| unit(p))
            .collect();
        samples.extend(points.first().copied());
        for pair in points.windows(2) {
            let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
            samples.extend((1..=32).map(|k| {
                let t = k as f64 / 32.0;
                (ax + t * (bx - ax), ay + t * (by - ay))
            }));
        }
    }
    // The legend's rough size in the plot: a quarter of the width, and a
    // row a series.
    let (w, h) = (0.25, 0.06 + 0.065 * panel.series.len() as f64);
    let across = |side: i8, size: f64| match side {
        -1 => 0.0..size,
        0 => 0.5 - size / 2.0..0.5 + size / 2.0,
        _ => 1.0 - size..1.0,
    };
    let crossings = |x_side: i8, y_side: i8| {
        let (xs, ys) = (across(x_side, w), across(y_side, h));
        samples
            .iter()
            .filter(|(x, y)| xs.contains(x) && ys.contains(y))
            .count()
    };
    [
        (first, 1, if rising { -1 } else { 1 }),
        (second, 1, if rising { 1 } else { -1 }),
        (UpperLeft, -1, 1),
        (LowerLeft, -1, -1),
        (MiddleRight, 1, 0),
        (MiddleLeft, -1, 0),
        (UpperMiddle, 0, 1),
        (LowerMiddle, 0, -1),
    ]
    .into_iter()
    .min_by_key(|&(_, x_side, y_side)| crossings(x_side, y_side))
    .map_or(UpperRight, |(position, _, _)| position)
}

/// The axes' ranges: the steps the curves cover, and their values with a
/// margin so no curve runs along the frame. A flat or single-point curve
/// gets a range around its value rather than an empty one.
fn ranges(panel: &Panel) -> (Range<u64>, Range<f64>) {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let first = points().map(|p| p.0).min().unwrap_or(0);
    let last = points().map(|p| p.0).max().unwrap_or(1).max(first + 1);
    let finite = || points().map(|p| p.1).filter(|v| v.is_finite());
    let low = finite().fold(f64::INFINITY, f64::min);
    let high = finite().fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if low > high { (0.0, 1.0) } else { (low, high) };
    let pad = if high > low {
        (high - low) * 0.05
    } else if low != 0.0 {
        low.abs() * 0.1
    } else {
        1.0
    };
    (first..last, (low - pad)..(high + pad))
}

/// A y tick: `2.0e-4` in scientific panels, otherwise as many decimals as
/// tell ticks `span / 10` apart.
fn tick_label(value: f64, format: TickFormat, span: f64) -> String {
    match format {
        TickFormat::Scientific => format!("{value:.1e}"),
        TickFormat::Decimal => {
            let decimals = (-(span / 10.0).log10().floor()).clamp(0.0, 8.0) as usize;
            format!("{value:.decimals$}")
        }
    }
}

/// Registers the embedded font under the family name plotters asks for,
/// once per process.
fn register_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font does not load".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_follow_the_axis() {
        assert_eq!(tick_label(0.0003, TickFormat::Scientific, 1e-4), "3.0e-4");
        assert_eq!(tick_label(2.5, TickFormat::Decimal, 3.0), "2.5");
        assert_eq!(tick_label(2.25, TickFormat::Decimal, 0.3), "2.25");
        assert_eq!(tick_label(120.0, TickFormat::Decimal, 500.0), "120");
    }

    #[test]
    fn the_legend_goes_where_no_curve_runs() {
        let series = |name: &str, points: Vec<(u64, f64)>| Series {
            name: name.into(),
            points,
        };
        let flat = |name: &str, value| series(name, vec![(50, value), (600, value)]);
        // The demo's curves: shape flat low then rising past the targets,
        // REC flat low, the two targets flat high. Every corner is crossed
        // (the lower right, where the old rule put it, by REC); the left
        // edge's middle is free.
        let panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: "accuracy".into(),
            ticks: TickFormat::Decimal,
            series: vec![
                series(
                    "shape",
                    vec![
                        (50, 13.0),
                        (250, 13.0),
                        (350, 53.0),
                        (450, 82.0),
                        (600, 93.0),
                    ],
                ),
                series(
                    "REC",
                    vec![(50, 25.0), (300, 37.0), (500, 40.0), (600, 32.0)],
                ),
                flat("shape target", 90.0),
                flat("REC target", 85.0),
            ],
        };
        let (steps, values) = ranges(&panel);
        let corner = legend_corner(&panel, &steps, &values);
        assert!(
            matches!(corner, SeriesLabelPosition::MiddleLeft),
            "{corner:?}"
        );
        // A falling loss and a flat line low leave the upper right free.
        let loss = Panel {
            series: vec![
                series("train", vec![(0, 3.0), (100, 1.0), (1000, 0.5)]),
                flat("floor", 0.4),
            ],
            ..panel
        };
        let (steps, values) = ranges(&loss);
        let corner = legend_corner(&loss, &steps, &values);
        assert!(
            matches!(corner, SeriesLabelPosition::UpperRight),
            "{corner:?}"
        );
    }

    #[test]
    fn a_flat_curve_gets_a_range_around_its_value() {
        let panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            ticks: TickFormat::Scientific,
            series: vec![Series {
                name: "lr".into(),
                points: vec![(5, 1e-3)],
            }],
        };
        let (steps, values) = ranges(&panel);
        assert_eq!(steps, 5..6);
        assert!(values.start < 1e-3 && values.end > 1e-3 && values.start > 0.0);
    }
}

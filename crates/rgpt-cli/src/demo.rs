//! `rgpt demo [--quick] [--ablation] [--out DIR]`: train a tiny RGPT from
//! nothing on the synthetic world and show what it learned.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use rgpt_demo::{run_demo, CurveOptions, DemoConfig, DemoEvent, DemoResults, DemoTargets};
use rgpt_vision::refiner::RefinerKind;

#[derive(Args)]
pub struct DemoArgs {
    /// Where everything goes (world, checkpoints, model, results.json).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// The demo's settings (default: configs/demo-tiny.yaml, built in).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A smaller, faster run (configs/demo-quick.yaml, built in), for smoke tests.
    #[arg(long, conflicts_with = "config")]
    quick: bool,
    /// Also train with refiner `none` and `bilinear4` and compare by region
    /// size (the synthetic counterpart of the paper's Table 6).
    #[arg(long)]
    ablation: bool,
    /// Also score shape classification and REC on a few held-out images
    /// every N steps of each stage, into each stage's curve.jsonl (for
    /// learning curves; slower).
    #[arg(long)]
    curve_every: Option<u64>,
    /// A directory of prompt variants (*.yaml) for the world's
    /// conversations, instead of the ones built into rgpt.
    #[arg(long)]
    prompts: Option<PathBuf>,
}

/// Draws the demo's progress: a bar per phase on a terminal, periodic
/// lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    phase: String,
    last_line: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            phase: String::new(),
            last_line: std::time::Instant::now(),
        }
    }

    fn bar(&mut self, phase: &str, total: u64) -> &ProgressBar {
        if self.phase != phase || self.bar.is_none() {
            if let Some(bar) = self.bar.take() {
                bar.finish();
            }
            let bar = crate::runtime::progress_bar(phase, Some(total), crate::runtime::COUNT);
            self.phase = phase.to_string();
            self.bar = Some(bar);
        }
        self.bar.as_ref().expect("just set")
    }

    fn plain_line(&mut self, text: String, last: bool) {
        let hidden = self.bar.as_ref().is_none_or(ProgressBar::is_hidden);
        if hidden && (last || self.last_line.elapsed().as_secs() >= 10) {
            eprintln!("{text}");
            self.last_line = std::time::Instant::now();
        }
    }

    fn event(&mut self, event: DemoEvent<'_>) {
        match event {
            DemoEvent::Phase(name) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish();
                }
                eprintln!("== {name}");
            }
            DemoEvent::TowerStep(s) => {
                let bar = self.bar("tower", s.total_steps);
                bar.set_position(s.step);
                bar.set_message(format!("loss {:.3}", s.loss));
                self.plain_line(
                    format!(
                        "tower step {}/{}: loss {:.3}",
                        s.step, s.total_steps, s.loss
                    ),
                    s.step == s.total_steps,
                );
            }
            DemoEvent::TrainStep { stage, metrics: m } => {
                let bar = self.bar(stage, m.total_steps);
                bar.set_position(m.step);
                bar.set_message(format!(
                    "loss {:.3} {:.0} samples/s",
                    m.loss, m.samples_per_s
                ));
                self.plain_line(
                    format!(
                        "{stage} step {}/{}: loss {:.3}, {:.1} samples/s",
                        m.step, m.total_steps, m.loss, m.samples_per_s
                    ),
                    m.step == m.total_steps,
                );
            }
            DemoEvent::Curve(p) => {
                if let Some(bar) = &self.bar {
                    bar.println(format!(
                        "{} step {}: classification {}, REC {}",
                        p.stage,
                        p.step,
                        percent(p.region_cls_acc),
                        percent(p.rec_acc)
                    ));
                }
                self.plain_line(
                    format!(
                        "{} step {}: held-out classification {}, REC {}",
                        p.stage,
                        p.step,
                        percent(p.region_cls_acc),
                        percent(p.rec_acc)
                    ),
                    true,
                );
            }
            DemoEvent::Eval(task, done, total) => {
                let bar = self.bar(task, total as u64);
                bar.set_position(done as u64);
                self.plain_line(format!("{task}: {done}/{total} answered"), done == total);
            }
        }
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// "target 90%: met" for a score against its target, blank without one.
fn verdict(value: f64, target: Option<f64>) -> String {
    match target {
        Some(t) if value >= t => format!("{}: met", percent(t)),
        Some(t) => format!("{}: NOT met", percent(t)),
        None => String::new(),
    }
}

fn print_results(results: &DemoResults, targets: Option<DemoTargets>) {
    println!("\nheld-out results (refiner {}):", results.refiner.name());
    println!("| metric | value | target |\n|---|---|---|");
    println!(
        "| region classification accuracy (shape, closed set) | {} | {} |",
        percent(results.region_cls_acc),
        verdict(results.region_cls_acc, targets.map(|t| t.region_cls_acc))
    );
    println!(
        "| region classification accuracy (generated answer) | {} | |",
        percent(results.region_cls_generated_acc)
    );
    println!(
        "| region classification, regions shuffled between questions (control) | {} | |",
        percent(results.region_cls_shuffled_acc)
    );
    println!(
        "| REC accuracy | {} | {} |",
        percent(results.rec_acc),
        verdict(results.rec_acc, targets.map(|t| t.rec_acc))
    );
    println!("| region caption CIDEr | {:.3} | |", results.caption_cider);
    println!("| training time | {:.0} s | |", results.train_seconds);
    println!(
        "| tower pre-training time | {:.0} s | |",
        results.tower.seconds
    );
    for stage in &results.stages {
        let shared = if stage.shared_from.is_some() {
            " (the main run's)"
        } else {
            ""
        };
        println!(
            "| `{}` stage time{shared} | {:.0} s | |",
            stage.name, stage.seconds
        );
    }
    println!("| evaluation time | {:.0} s | |", results.eval_seconds);
    for (size, scores) in &results.by_size {
        let get = |k: &str| scores.get(k).map_or("-".into(), |v| percent(*v));
        println!(
            "| {size} regions: classification / REC | {} / {} | |",
            get("region_cls_acc"),
            get("rec_acc")
        );
    }
}

fn print_dialogues(results: &DemoResults, picture: &std::path::Path) {
    println!(
        "\nsample dialogues on held-out images (regions outlined in {}):",
        picture.display()
    );
    for (k, d) in results.dialogues.iter().enumerate() {
        println!(
            "\n[{}] {} ({}); regions: {}",
            k + 1,
            d.image,
            d.task,
            d.colours.join(", ")
        );
        for turn in &d.turns {
            let mark = if turn.answer == turn.expected {
                "ok"
            } else {
                "expected: "
            };
            let expected = if turn.answer == turn.expected {
                ""
            } else {
                turn.expected.as_str()
            };
            println!(
                "  USER: {}\n  RGPT: {}   ({mark}{expected})",
                turn.question, turn.answer
            );
        }
    }
}

fn print_ablation(runs: &[DemoResults]) {
    println!("\nrefiner ablation by region size (classification / REC):");
    println!("| refiner | small | medium | large | all |\n|---|---|---|---|---|");
    for r in runs {
        let cell = |size: &str| {
            r.by_size.get(size).map_or("-".into(), |s| {
                let get = |k: &str| s.get(k).map_or("-".into(), |v| percent(*v));
                format!("{} / {}", get("region_cls_acc"), get("rec_acc"))
            })
        };
        println!(
            "| {} | {} | {} | {} | {} / {} |",
            r.refiner.name(),
            cell("small"),
            cell("medium"),
            cell("large"),
            percent(r.region_cls_acc),
            percent(r.rec_acc)
        );
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => DemoConfig::from_file(path)
            .with_context(|| format!("while reading the demo config {}", path.display()))?,
        None => DemoConfig::builtin(args.quick)?,
    };
    let prompts = crate::data::prompts(args.prompts.as_deref())?;
    let curve = args.curve_every.map(|every| CurveOptions {
        every: every.max(1),
        images: 40,
    });
    let mut progress = Progress::new();
    let main = run_demo(
        &config,
        &prompts,
        &args.out,
        &args.out,
        None,
        curve,
        &mut |e| progress.event(e),
    )?;
    print_dialogues(&main, &args.out.join("samples.png"));
    print_results(&main, config.targets);
    println!(
        "\nmodel: {}  results: {}",
        args.out.join("model").display(),
        args.out.join("results.json").display()
    );
    // A rerun whose stages had finished without curves draws none.
    let curves = args.out.join(rgpt_demo::curves::PNG_NAME);
    if curve.is_some() && curves.is_file() {
        println!("learning curves: {}", curves.display());
    }
    if args.ablation {
        let mut runs = vec![main];
        for refiner in [RefinerKind::None, RefinerKind::Bilinear4] {
            let out = args.out.join("ablation").join(refiner.name());
            eprintln!("== ablation: refiner {}", refiner.name());
            runs.push(run_demo(
                &config,
                &prompts,
                &args.out,
                &out,
                Some(refiner),
                curve,
                &mut |e| progress.event(e),
            )?);
        }
        print_ablation(&runs);
    }
    Ok(())
}

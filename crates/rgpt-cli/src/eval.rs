//! `rgpt eval`: run a model over an evaluation set (resumable, batched,
//! with a progress bar) and score it, or score existing predictions with
//! the same metrics (other models' outputs too).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rgpt_data::format::default_image_root;
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::readers::pope::read_questions;
use rgpt_eval::caption::{score_captions, MeteorSource, ScoreOptions};
use rgpt_eval::coco_ap::{coco_box_ap, read_class_scores, GroundTruth, Params};
use rgpt_eval::evaluate::evaluate_items;
use rgpt_eval::items::pope_items;
use rgpt_eval::pope::{read_answers, score_answers};
use rgpt_eval::results::markdown;
use rgpt_eval::runner::Evaluator;
use rgpt_eval::{evaluate_task, TaskKind, TaskOptions};
use rgpt_model::chat::RegionGenerator;

use crate::runtime::RuntimeArgs;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Region classification (COCO-80 or any closed set): accuracy and box mAP.
    #[command(name = "coco-cls", visible_alias = "cls")]
    Classification(RunArgs),
    /// Referring expressions answered `Region [k]`: accuracy.
    Rec(RunArgs),
    /// Region captioning (RefCOCOg, Visual Genome, synthetic): BLEU, METEOR, ROUGE-L, CIDEr.
    #[command(name = "refcocog-cap", visible_aliases = ["vg-cap", "cap"])]
    Caption {
        #[command(flatten)]
        run: RunArgs,
        /// METEOR 1.5 jar (default: found in a pycocoevalcap install or $RGPT_METEOR_JAR).
        #[arg(long)]
        meteor_jar: Option<PathBuf>,
    },
    /// Score captions: PRED `{"id": "caption"}` against REFS `{"id": ["ref", ...]}`.
    Captions {
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        refs: PathBuf,
        /// METEOR 1.5 jar (default: found in a pycocoevalcap install or $RGPT_METEOR_JAR).
        #[arg(long)]
        meteor_jar: Option<PathBuf>,
        /// Score only the ids present in both files.
        #[arg(long)]
        allow_missing: bool,
        #[arg(long)]
        json: bool,
    },
    /// POPE: run a model on question files, or score answers (--answers).
    Pope(PopeArgs),
    /// COCO box AP of per-class scores for ground-truth boxes.
    CocoAp {
        /// COCO instances JSON (the ground truth).
        #[arg(long)]
        annotations: PathBuf,
        /// JSON lines `{"annotation_id": ID, "scores": {"<category id or name>": SCORE}}`.
        #[arg(long)]
        scores: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ModelArgs {
    /// RGPT or LLaVA checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Directory for predictions.jsonl (resumed when present), results.json and results.md.
    #[arg(long)]
    out: PathBuf,
    /// Image paths of the data are relative to this (default: the data file's directory).
    #[arg(long)]
    image_root: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct RunArgs {
    /// Conversations in the rgpt-data format (from `rgpt data build` or `synth`).
    #[arg(long)]
    data: PathBuf,
    /// Classification: the closed set, comma-separated (default: every
    /// answer in the data).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
pub struct PopeArgs {
    /// POPE question file (JSON lines {question_id, image, text, label}).
    #[arg(long)]
    questions: PathBuf,
    /// Score these answers (JSON lines {question_id, text}) instead of running a model.
    #[arg(long, conflicts_with = "model")]
    answers: Option<PathBuf>,
    /// Print JSON (scoring mode).
    #[arg(long)]
    json: bool,
    /// RGPT or LLaVA checkpoint directory (running mode).
    #[arg(long, requires = "out")]
    model: Option<PathBuf>,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    image_root: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// The task name the results carry (e.g. pope-adversarial for that
    /// split's questions).
    #[arg(long, default_value = "pope")]
    task: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Classification(args) => run_samples(args, TaskKind::Classification, None),
        EvalCommand::Rec(args) => run_samples(args, TaskKind::Rec, None),
        EvalCommand::Caption { run, meteor_jar } => {
            run_samples(run, TaskKind::Caption, Some(meteor_source(meteor_jar)))
        }
        EvalCommand::Captions {
            pred,
            refs,
            meteor_jar,
            allow_missing,
            json,
        } => captions(&pred, &refs, meteor_jar, allow_missing, json),
        EvalCommand::Pope(args) => pope(args),
        EvalCommand::CocoAp {
            annotations,
            scores,
            json,
        } => coco_ap(&annotations, &scores, json),
    }
}

fn progress_bar(what: &str) -> indicatif::ProgressBar {
    crate::runtime::progress_bar(what, None, "{pos}/{len} {per_sec}")
}

/// Loads the model of `args`, with the image root of the data (or the
/// data's own directory), and evaluates with it.
fn with_evaluator<T>(
    args: &ModelArgs,
    default_root: &Path,
    evaluate: impl FnOnce(&Evaluator<'_>, &Path) -> Result<T, rgpt_eval::EvalError>,
) -> anyhow::Result<T> {
    let (device, kind) = args.runtime.apply()?;
    let generator = RegionGenerator::load(&args.model, device, kind)
        .with_context(|| format!("while loading {}", args.model.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let evaluator = Evaluator {
        generator: &generator,
        image_root: args
            .image_root
            .clone()
            .unwrap_or_else(|| default_root.to_path_buf()),
        batch_size: args.batch_size,
        max_new_tokens: args.max_new_tokens,
        template: generator.model.template(),
    };
    Ok(evaluate(&evaluator, &args.out.join("predictions.jsonl"))?)
}

/// Draws `on_progress(done, total)` on `bar`.
fn show_progress(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

fn write_results(
    out: &Path,
    task: &str,
    kind: TaskKind,
    results: &serde_json::Value,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(results)? + "\n";
    rgpt_weights::save::write_atomic(&out.join("results.json"), json.as_bytes())?;
    let table = markdown(task, kind, results);
    rgpt_weights::save::write_atomic(&out.join("results.md"), table.as_bytes())?;
    print!("{table}");
    Ok(())
}

fn meteor_source(jar: Option<PathBuf>) -> MeteorSource {
    match jar {
        Some(jar) => MeteorSource::Jar(jar),
        None => MeteorSource::Locate,
    }
}

/// Reads a JSON file as `T`, naming the file in errors.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not {what}", path.display()))
}

fn captions(
    pred: &Path,
    refs: &Path,
    meteor_jar: Option<PathBuf>,
    allow_missing: bool,
    json: bool,
) -> anyhow::Result<()> {
    let predictions: BTreeMap<String, String> =
        read_json(pred, "a JSON object {\"id\": \"caption\"}")?;
    let references: BTreeMap<String, Vec<String>> =
        read_json(refs, "a JSON object {\"id\": [\"reference\", ...]}")?;
    let options = ScoreOptions {
        allow_missing,
        meteor: meteor_source(meteor_jar),
    };
    let report = score_captions(&predictions, &references, &options)?;
    if let Some(why) = &report.meteor_unavailable {
        eprintln!("METEOR unavailable: {why}");
    }
    if !report.missing.is_empty() {
        eprintln!(
            "scored without {} prediction(s) that have no references",
            report.missing.len()
        );
    }
    if json {
        println!("{}", serde_json::to_string(&report.scores)?);
    } else {
        let value = serde_json::to_value(report.scores)?;
        for (name, score) in value.as_object().into_iter().flatten() {
            println!(
                "{name:<8} {}",
                score.as_f64().map_or("n/a".into(), |v| format!("{v:.4}"))
            );
        }
    }
    Ok(())
}

fn run_samples(args: RunArgs, kind: TaskKind, meteor: Option<MeteorSource>) -> anyhow::Result<()> {
    let options = TaskOptions {
        limit: None,
        classes: args.classes.clone(),
        meteor: meteor.unwrap_or_default(),
        shuffle_regions: false,
    };
    let root = default_image_root(&args.data);
    let name = args
        .data
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bar = progress_bar(&name);
    let scored = with_evaluator(&args.model, &root, |evaluator, predictions| {
        evaluate_task(
            evaluator,
            &args.data,
            kind,
            &options,
            predictions,
            &mut show_progress(&bar),
        )
    })?;
    bar.finish_and_clear();
    write_results(&args.model.out, &scored.task, kind, &scored.results)
}

fn pope(args: PopeArgs) -> anyhow::Result<()> {
    let questions = read_questions(&args.questions)?;
    if let Some(answers_path) = &args.answers {
        let answers = read_answers(answers_path)?;
        let labels: Vec<(u64, bool)> = questions
            .iter()
            .map(|q| (q.question_id, q.label == "yes"))
            .collect();
        let scores = score_answers(&labels, &answers, answers_path)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"accuracy": scores.accuracy, "precision": scores.precision,
                    "recall": scores.recall, "f1": scores.f1, "yes_ratio": scores.yes_ratio})
            );
        } else {
            print!(
                "{}",
                markdown("pope", TaskKind::Pope, &serde_json::to_value(scores)?)
            );
        }
        return Ok(());
    }
    let (Some(model), Some(out)) = (args.model.clone(), args.out.clone()) else {
        anyhow::bail!("give --answers to score answers, or --model DIR --out DIR to run a model");
    };
    let task = args.task.as_str();
    let items = pope_items(&questions, task);
    let model_args = ModelArgs {
        model,
        out: out.clone(),
        image_root: args.image_root.clone(),
        batch_size: args.batch_size,
        max_new_tokens: 16,
        runtime: args.runtime.clone(),
    };
    let root = default_image_root(&args.questions);
    let options = TaskOptions::default();
    let bar = progress_bar(task);
    let scored = with_evaluator(&model_args, &root, |evaluator, predictions| {
        evaluate_items(
            evaluator,
            &items,
            TaskKind::Pope,
            &options,
            predictions,
            &mut show_progress(&bar),
        )
    })?;
    bar.finish_and_clear();
    write_results(&out, task, TaskKind::Pope, &scored.results)
}

fn coco_ap(annotations: &Path, scores_path: &Path, json: bool) -> anyhow::Result<()> {
    let dataset = CocoDataset::read(annotations)?;
    let by_name: BTreeMap<String, u64> = dataset
        .categories
        .iter()
        .map(|c| (c.name.clone(), c.id))
        .collect();
    let ground_truth: Vec<GroundTruth> =
        dataset.annotations.iter().map(GroundTruth::from).collect();
    let detections = read_class_scores(scores_path, &ground_truth, &by_name)?;
    let categories: Vec<u64> = dataset.categories.iter().map(|c| c.id).collect();
    let images: Vec<u64> = dataset.images.iter().map(|i| i.id).collect();
    let summary = coco_box_ap(
        &ground_truth,
        &detections,
        &categories,
        &images,
        &Params::default(),
    );
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let names = [
            "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
        ];
        for (name, value) in names.iter().zip(summary.stats()) {
            println!("{name:<6} {value:.4}");
        }
    }
    Ok(())
}

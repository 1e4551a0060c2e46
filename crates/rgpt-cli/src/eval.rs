//! `rgpt eval`: run a model over an evaluation set (resumable, batched,
//! with a progress bar) and score it, or score existing predictions with
//! the same metrics (other models' outputs too).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rgpt_data::format::read_all_samples;
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::readers::pope::read_questions;
use rgpt_eval::caption::{score_captions, MeteorSource, ScoreOptions};
use rgpt_eval::coco_ap::{coco_box_ap, Detection, GroundTruth, Params};
use rgpt_eval::items::{items_of, pope_items, EvalItem, TaskKind};
use rgpt_eval::pope::{answer_is_yes, pope_scores};
use rgpt_eval::predictions::PredictionStore;
use rgpt_eval::results::{
    caption_results, classification_results, markdown, pope_results, rec_results,
};
use rgpt_eval::runner::Evaluator;
use rgpt_llm::device::{parse_device, parse_dtype};
use rgpt_model::pipeline::RegionGenerator;
use serde::Deserialize;

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
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
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
    #[arg(long, default_value = "auto")]
    device: String,
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
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Loads the model, answers every item (resuming), and returns the store.
fn answer(
    args: &ModelArgs,
    default_root: &Path,
    items: &[EvalItem],
    classes: &[String],
    what: &str,
) -> anyhow::Result<PredictionStore> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype)?;
    let generator = RegionGenerator::load(&args.model, device, kind)
        .with_context(|| format!("while loading {}", args.model.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut store = PredictionStore::open(&args.out.join("predictions.jsonl"))?;
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
    let bar = progress_bar(what);
    evaluator.answer(items, classes, &mut store, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(store)
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
    let samples = read_all_samples(&args.data)?;
    let mut items = Vec::new();
    for sample in &samples {
        items.extend(items_of(sample)?);
    }
    if let Some(other) = items.iter().find(|i| i.kind != kind) {
        anyhow::bail!(
            "{} holds `{}` samples, which are not a {kind:?} task: use the matching `rgpt eval` subcommand",
            args.data.display(),
            other.task
        );
    }
    let task = items.first().map(|i| i.task.clone()).unwrap_or_default();
    let classes: Vec<String> = if args.classes.is_empty() && kind == TaskKind::Classification {
        let set: std::collections::BTreeSet<String> =
            items.iter().map(|i| i.answer.trim().to_string()).collect();
        set.into_iter().collect()
    } else {
        args.classes.clone()
    };
    let root = rgpt_data::loader::default_image_root(&args.data);
    let store = answer(&args.model, &root, &items, &classes, &task)?;
    let image_root = args.model.image_root.clone().unwrap_or(root);
    let results = match kind {
        TaskKind::Classification => classification_results(&items, &classes, &store, &image_root)?,
        TaskKind::Caption => caption_results(&items, &store, meteor.unwrap_or_default())?,
        _ => rec_results(&items, &store, &image_root)?,
    };
    write_results(&args.model.out, &task, kind, &results)
}

#[derive(Deserialize)]
struct Answer {
    question_id: u64,
    text: String,
}

fn pope(args: PopeArgs) -> anyhow::Result<()> {
    let questions = read_questions(&args.questions)?;
    if let Some(answers_path) = &args.answers {
        let text = std::fs::read_to_string(answers_path)
            .with_context(|| format!("cannot read {}", answers_path.display()))?;
        let mut answers: BTreeMap<u64, String> = BTreeMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let a: Answer = serde_json::from_str(line).with_context(|| {
                format!("{}:{}: malformed answer", answers_path.display(), i + 1)
            })?;
            answers.insert(a.question_id, a.text);
        }
        let missing: Vec<u64> = questions
            .iter()
            .filter(|q| !answers.contains_key(&q.question_id))
            .map(|q| q.question_id)
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "{} question(s) have no answer in {} (first: {:?})",
                missing.len(),
                answers_path.display(),
                &missing[..missing.len().min(5)]
            );
        }
        let scores = pope_scores(
            questions
                .iter()
                .map(|q| (answer_is_yes(&answers[&q.question_id]), q.label == "yes")),
        );
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
    let task = match args.questions.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if stem.contains("adversarial") => "pope-adversarial",
        Some(stem) if stem.contains("popular") => "pope-popular",
        Some(stem) if stem.contains("random") => "pope-random",
        _ => "pope",
    };
    let items = pope_items(&questions, task);
    let model_args = ModelArgs {
        model,
        out: out.clone(),
        image_root: args.image_root.clone(),
        batch_size: args.batch_size,
        max_new_tokens: 16,
        device: args.device.clone(),
        dtype: "f32".into(),
    };
    let root = rgpt_data::loader::default_image_root(&args.questions);
    let store = answer(&model_args, &root, &items, &[], task)?;
    let results = pope_results(&items, &store)?;
    write_results(&out, task, TaskKind::Pope, &results)
}

#[derive(Deserialize)]
struct ScoreLine {
    annotation_id: u64,
    scores: BTreeMap<String, f64>,
}

fn coco_ap(annotations: &Path, scores_path: &Path, json: bool) -> anyhow::Result<()> {
    let dataset = CocoDataset::read(annotations)?;
    let by_name: BTreeMap<&str, u64> = dataset
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    let anns = dataset.annotations_by_id();
    let text = std::fs::read_to_string(scores_path)
        .with_context(|| format!("cannot read {}", scores_path.display()))?;
    let mut detections = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", scores_path.display(), i + 1);
        let s: ScoreLine =
            serde_json::from_str(line).with_context(|| format!("{}: malformed scores", at()))?;
        let ann = anns.get(&s.annotation_id).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: annotation {} is not in {}",
                at(),
                s.annotation_id,
                annotations.display()
            )
        })?;
        for (class, score) in s.scores {
            let category_id = match class.parse::<u64>() {
                Ok(id) => id,
                Err(_) => *by_name
                    .get(class.as_str())
                    .ok_or_else(|| anyhow::anyhow!("{}: unknown category `{class}`", at()))?,
            };
            detections.push(Detection {
                image_id: ann.image_id,
                category_id,
                bbox: ann.bbox,
                score,
            });
        }
    }
    let ground_truth: Vec<GroundTruth> =
        dataset.annotations.iter().map(GroundTruth::from).collect();
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

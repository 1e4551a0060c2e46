//! `rgpt data`: build training conversations from the public datasets,
//! generate the synthetic region world, and summarise a conversation file.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rgpt_data::builders::classification::{build_classification, ClassificationOptions};
use rgpt_data::builders::llava::build_llava;
use rgpt_data::builders::mix::{mix, MixInput};
use rgpt_data::builders::refcocog::{
    build_refcocog_caption, build_refcocog_rec, build_refcocog_rec_eval, read_proposals,
    RefcocogOptions,
};
use rgpt_data::builders::vg::{build_vg, VgOptions};
use rgpt_data::builders::{Built, RegionKind};
use rgpt_data::format::read_samples;
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::readers::refcoco::read_refs;
use rgpt_data::stats::DatasetStats;
use rgpt_data::synth::{write_world, SynthConfig};
use rgpt_data::PromptBank;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Turn a published dataset into region conversations (JSON lines).
    Build {
        #[command(subcommand)]
        kind: BuildKind,
    },
    /// Generate the synthetic region world: images of coloured shapes with
    /// exact masks and every task built from the ground truth.
    Synth(SynthArgs),
    /// Counts per task, regions per sample, words per answer and region areas.
    Stats {
        /// A conversation file (JSON lines).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SynthArgs {
    /// Directory for images/, objects.jsonl and one JSON-lines file per task.
    #[arg(long)]
    out: PathBuf,
    /// A YAML SynthConfig (every field optional); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    images: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Side of the square images, in pixels.
    #[arg(long)]
    image_size: Option<u32>,
    /// Directory of instruction variants (*.yaml) to use instead of the
    /// ones built into rgpt (the project's configs/prompts).
    #[arg(long)]
    prompts: Option<PathBuf>,
}

#[derive(Args)]
pub struct Common {
    /// Where to write the conversations (JSON lines, written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Seed of every random choice (sampled boxes, prompt variants, order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory of instruction variants (*.yaml) to use instead of the
    /// ones built into rgpt (the project's configs/prompts).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Prefixed to every sample's image path (e.g. coco/train2017/), so
    /// the files of several datasets can share one `data.image_root`.
    #[arg(long, default_value = "")]
    image_prefix: String,
}

#[derive(Subcommand)]
pub enum BuildKind {
    /// COCO-80 closed-set classification with the task-guided prompt.
    CocoCls {
        /// COCO instances JSON (e.g. instances_train2017.json).
        #[arg(long)]
        instances: PathBuf,
        #[arg(long, default_value_t = 20)]
        per_category: usize,
        /// box or mask.
        #[arg(long, default_value = "box")]
        regions: RegionKind,
        #[command(flatten)]
        common: Common,
    },
    /// V3Det classification, balanced per category (100 pre-training, 10 fine-tuning).
    V3detCls {
        /// V3Det annotation JSON (COCO layout).
        #[arg(long)]
        instances: PathBuf,
        #[arg(long, default_value_t = 100)]
        per_category: usize,
        #[command(flatten)]
        common: Common,
    },
    /// RefCOCOg region -> referring expression.
    RefcocogCap {
        #[command(flatten)]
        refcocog: RefcocogArgs,
        #[command(flatten)]
        common: Common,
    },
    /// RefCOCOg referring expression -> "Region [k]." among candidates, with negatives.
    RefcocogRec {
        #[command(flatten)]
        refcocog: RefcocogArgs,
        /// Chance that a conversation gets a no-match question.
        #[arg(long, default_value_t = 0.3)]
        negatives: f64,
        /// Candidate regions per image.
        #[arg(long, default_value_t = 8)]
        max_candidates: usize,
        /// Build the evaluation set of the paper's protocol instead: one
        /// question per sentence, candidates from these detection proposals
        /// (COCO results JSON), the ground truth added when none reaches
        /// IoU 0.5.
        #[arg(long)]
        proposals: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Visual Genome multi-turn region captions, up to 10 regions per image.
    Vg {
        /// region_descriptions.json.
        #[arg(long)]
        regions: PathBuf,
        #[arg(long, default_value_t = 10)]
        max_regions: usize,
        #[command(flatten)]
        common: Common,
    },
    /// LLaVA conversation JSON passed through (e.g. the 558K captions).
    Llava {
        /// blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json, ...
        #[arg(long)]
        json: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// POPE-style existence questions about a synthetic world (POPE's file format).
    SynthPope {
        /// A directory written by `rgpt data synth`.
        #[arg(long)]
        world: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Combine built files with weights (FILE or FILE:WEIGHT) into one shuffled file.
    Mix {
        #[arg(long = "input", required = true)]
        inputs: Vec<MixInput>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
pub struct RefcocogArgs {
    /// The refer toolkit's instances.json.
    #[arg(long)]
    instances: PathBuf,
    /// refs(umd).p.
    #[arg(long)]
    refs: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// box or mask.
    #[arg(long, default_value = "mask")]
    regions: RegionKind,
}

impl RefcocogArgs {
    fn options(&self, seed: u64) -> RefcocogOptions {
        RefcocogOptions {
            split: self.split.clone(),
            region_kind: self.regions,
            seed,
            ..RefcocogOptions::default()
        }
    }

    fn read(&self) -> anyhow::Result<(CocoDataset, Vec<rgpt_data::readers::refcoco::RefRecord>)> {
        Ok((CocoDataset::read(&self.instances)?, read_refs(&self.refs)?))
    }
}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Build { kind } => build(kind),
        DataCommand::Synth(args) => synth(args),
        DataCommand::Stats { file, json } => stats(&file, json),
    }
}

/// The prompt variants of `--prompts DIR`, or the built-in ones.
pub fn prompts(dir: Option<&Path>) -> anyhow::Result<PromptBank> {
    match dir {
        Some(dir) => PromptBank::from_dir(dir)
            .with_context(|| format!("while reading the prompt variants in {}", dir.display())),
        None => Ok(PromptBank::builtin()?),
    }
}

fn build(kind: BuildKind) -> anyhow::Result<()> {
    let (built, common) = match kind {
        BuildKind::CocoCls {
            instances,
            per_category,
            regions,
            common,
        } => {
            let options = ClassificationOptions {
                per_category,
                region_kind: regions,
                seed: common.seed,
                ..ClassificationOptions::coco()
            };
            let dataset = CocoDataset::read(&instances)?;
            (
                build_classification(&dataset, &prompts(common.prompts.as_deref())?, &options)?,
                common,
            )
        }
        BuildKind::V3detCls {
            instances,
            per_category,
            common,
        } => {
            let options = ClassificationOptions {
                seed: common.seed,
                ..ClassificationOptions::v3det(per_category)
            };
            let dataset = CocoDataset::read(&instances)?;
            (
                build_classification(&dataset, &prompts(common.prompts.as_deref())?, &options)?,
                common,
            )
        }
        BuildKind::RefcocogCap { refcocog, common } => {
            let (instances, refs) = refcocog.read()?;
            let options = refcocog.options(common.seed);
            let prompts = prompts(common.prompts.as_deref())?;
            (
                build_refcocog_caption(&instances, &refs, &prompts, &options)?,
                common,
            )
        }
        BuildKind::RefcocogRec {
            refcocog,
            negatives,
            max_candidates,
            proposals,
            common,
        } => {
            let (instances, refs) = refcocog.read()?;
            let options = RefcocogOptions {
                negative_probability: negatives,
                max_candidates,
                ..refcocog.options(common.seed)
            };
            let prompts = prompts(common.prompts.as_deref())?;
            let built = match proposals {
                Some(path) => {
                    let proposals = read_proposals(&path)?;
                    build_refcocog_rec_eval(&instances, &refs, &proposals, &prompts, &options)?
                }
                None => build_refcocog_rec(&instances, &refs, &prompts, &options)?,
            };
            (built, common)
        }
        BuildKind::Vg {
            regions,
            max_regions,
            mut common,
        } => {
            // The builder puts the prefix before `{image_id}.jpg` itself.
            let options = VgOptions {
                max_regions,
                image_prefix: std::mem::take(&mut common.image_prefix),
                seed: common.seed,
            };
            (
                build_vg(&regions, &prompts(common.prompts.as_deref())?, &options)?,
                common,
            )
        }
        BuildKind::Llava { json, common } => (build_llava(&json)?, common),
        BuildKind::Mix { inputs, common } => (mix(&inputs, common.seed)?, common),
        BuildKind::SynthPope { world, out, seed } => {
            let questions = rgpt_data::synth::pope::pope_questions(&world, seed)?;
            let written = rgpt_data::synth::pope::write_pope_questions(&questions, &out)?;
            println!("wrote {written} questions to {}", out.display());
            return Ok(());
        }
    };
    write(&built.with_image_prefix(&common.image_prefix), &common.out)
}

fn write(built: &Built, out: &Path) -> anyhow::Result<()> {
    let written = built.write(out)?;
    println!("wrote {written} samples to {}", out.display());
    eprint!("{}", built.skips);
    if built.skips.is_empty() {
        eprintln!();
    }
    Ok(())
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let mut config: SynthConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_yaml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?
        }
        None => SynthConfig::default(),
    };
    if let Some(images) = args.images {
        config.images = images;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(size) = args.image_size {
        config.image_size = size;
    }
    let prompts = prompts(args.prompts.as_deref())?;
    let started = std::time::Instant::now();
    let summary = write_world(&config, &prompts, &args.out)?;
    println!(
        "wrote {} images with {} objects to {} in {:.1} s",
        summary.images,
        summary.objects,
        summary.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    for (task, count) in &summary.samples {
        println!("  {task:<22} {count:>8} samples");
    }
    Ok(())
}

fn stats(file: &Path, json: bool) -> anyhow::Result<()> {
    let mut stats = DatasetStats::default();
    for sample in read_samples(file)? {
        stats.add(&sample?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{stats}");
    }
    Ok(())
}

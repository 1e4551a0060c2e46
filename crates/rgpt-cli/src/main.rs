//! `rgpt`: the RGPT-rs command line. Each subcommand parses its arguments,
//! calls one library function and formats the result.
mod bench;
mod clip_score;
mod data;
mod demo;
mod eval;
mod launch;
mod plot;
mod runtime;
mod serve;
mod train;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rgpt_llm::generation::{GenerationConfig, Sampling};
use rgpt_llm::{Template, TextGenerator};
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_model::rgpt::RegionGpt;
use rgpt_model::ModelError;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::load_image;
use rgpt_vision::refiner::RefinerKind;
use runtime::RuntimeArgs;

#[derive(Parser)]
#[command(
    name = "rgpt",
    version,
    about = "RegionGPT in Rust: region-level vision-language models on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text with a LLaMA-family Hugging Face checkpoint, or answer
    /// about an image and its regions with an RGPT / LLaVA checkpoint.
    Generate(GenerateArgs),
    /// Talk about one image and its regions, turn by turn (`/region SPEC`
    /// adds a region, `/reset` starts over, `/quit` ends).
    Chat(ChatArgs),
    /// Training data: build conversations from datasets, the synthetic
    /// world, statistics.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Train an RGPT from a YAML config (resumable).
    Train(train::TrainArgs),
    /// Serve a model over HTTP: an OpenAI-compatible chat API with regions.
    Serve(serve::ServeArgs),
    /// Time decode, prefill or mask pooling against the memory-traffic bound.
    Bench(bench::BenchArgs),
    /// CLIP's score of an image (or a region's crop) against texts.
    ClipScore(clip_score::ClipScoreArgs),
    /// Start this machine's ranks of a distributed run, as torchrun does:
    /// `rgpt launch --nproc 2 -- train --config F`.
    Launch(launch::LaunchArgs),
    /// Train a tiny RGPT from nothing on a synthetic world of shapes and
    /// score it on held-out images (resumable).
    Demo(demo::DemoArgs),
    /// Draw a training run's loss and learning-rate curves (PNG and SVG).
    Plot(plot::PlotArgs),
    /// Evaluate a model on the paper's benchmarks, or score predictions.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Region geometry tools.
    Region {
        #[command(subcommand)]
        command: RegionCommand,
    },
    /// Compose a fresh RGPT checkpoint from a CLIP directory and a LLaMA
    /// directory (refiner and connector newly initialised), to train from.
    Compose(ComposeArgs),
}

#[derive(Subcommand)]
enum RegionCommand {
    /// Area (pixels of the rasterised mask) and tight box of every
    /// annotation of a COCO instances file, as pycocotools computes them.
    Stats {
        #[arg(long)]
        annotations: PathBuf,
        /// Print JSON `{"<ann id>": {"area": .., "bbox": [x, y, w, h]}}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ComposeArgs {
    /// CLIP vision checkpoint (CLIPVisionModel or CLIPModel).
    #[arg(long)]
    vision: PathBuf,
    /// LLaMA-family decoder checkpoint (e.g. Vicuna-7B).
    #[arg(long)]
    llm: PathBuf,
    /// Where to write the RGPT checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Feature refinement module: deconv (the reference's), deconv_no_final_gelu,
    /// bilinear4, bilinear16, deconv+bilinear or none.
    #[arg(long, default_value = "deconv")]
    refiner: RefinerKind,
    /// Seed for the fresh refiner and connector weights.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Replace a checkpoint already in --out.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Hugging Face model directory (config.json, weights, tokenizer).
    #[arg(long)]
    model: PathBuf,
    /// The prompt; wrapped in the vicuna_v1 conversation template unless --raw.
    #[arg(long)]
    prompt: String,
    /// Feed the prompt as it is, without the conversation template.
    #[arg(long)]
    raw: bool,
    /// An image to ask about (the model directory must then be an RGPT or
    /// LLaVA checkpoint with preprocessor_config.json); `<image>` is
    /// prepended to the prompt when it has none.
    #[arg(long)]
    image: Option<PathBuf>,
    /// A region of the image, once per `<region>` in the prompt, in order:
    /// box:x1,y1,x2,y2 | poly:x1,y1,x2,y2,... | mask:PATH.png | rle:JSON |
    /// point:x,y[,r] (original-image pixels).
    #[arg(long = "region", requires = "image")]
    regions: Vec<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Report the K most likely tokens of every step (with --json).
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    /// RGPT or LLaVA checkpoint directory (with preprocessor_config.json).
    #[arg(long)]
    model: PathBuf,
    /// The image the conversation is about; it is given to the model once,
    /// with the first question.
    #[arg(long)]
    image: PathBuf,
    /// Regions to start with, as for `generate` (more with `/region SPEC`).
    #[arg(long = "region")]
    regions: Vec<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// How tokens are chosen; shared by `generate` and `chat`.
#[derive(Args)]
struct SamplingArgs {
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_new_tokens: u32,
    /// Always take the most likely token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    greedy: bool,
    /// Sample with this temperature.
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling: keep the most likely tokens whose probabilities sum to P.
    #[arg(long, requires = "temperature")]
    top_p: Option<f64>,
    /// Keep only the K most likely tokens when sampling.
    #[arg(long, requires = "temperature")]
    top_k: Option<i64>,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Seed for sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the output contains this text (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RGPT_LOG"))
        // Each span's time when it closes: `RGPT_LOG=rgpt_train=debug`
        // shows where a training step's time goes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Chat(args) => run_chat(args),
        Command::Data { command } => data::run(command),
        Command::Eval { command } => eval::run(command),
        Command::Plot(args) => plot::run(args),
        Command::Train(args) => train::run(args),
        Command::Launch(args) => launch::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::ClipScore(args) => clip_score::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Region { command } => match command {
            RegionCommand::Stats { annotations, json } => region_stats(&annotations, json),
        },
        Command::Compose(args) => run_compose(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Weight-loading progress: a bar on a terminal; otherwise, for checkpoints
/// big enough to take a while, a plain line every 10%.
struct LoadBar {
    bar: indicatif::ProgressBar,
    next_line_percent: u64,
}

impl LoadBar {
    const PLAIN_LINES_FROM_BYTES: u64 = 1 << 30;

    fn new(model: &std::path::Path) -> Self {
        let bar = runtime::progress_bar(
            "loading",
            None,
            "{binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        );
        bar.set_message(model.display().to_string());
        LoadBar {
            bar,
            next_line_percent: 10,
        }
    }

    fn update(&mut self, p: rgpt_llm::LoadProgress) {
        self.bar.set_length(p.bytes_total);
        self.bar.set_position(p.bytes_done);
        if self.bar.is_hidden() && p.bytes_total >= Self::PLAIN_LINES_FROM_BYTES {
            let percent = p.bytes_done * 100 / p.bytes_total.max(1);
            if percent >= self.next_line_percent {
                eprintln!(
                    "loading weights: {percent}% ({:.1} / {:.1} GiB)",
                    p.bytes_done as f64 / (1u64 << 30) as f64,
                    p.bytes_total as f64 / (1u64 << 30) as f64
                );
                self.next_line_percent = percent / 10 * 10 + 10;
            }
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (our library errors quote their source).
fn one_line(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn region_stats(annotations: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let dataset = rgpt_data::readers::coco::CocoDataset::read(annotations)?;
    let images = dataset.images_by_id();
    let mut rows = std::collections::BTreeMap::new();
    for ann in &dataset.annotations {
        let image = images.get(&ann.image_id).ok_or_else(|| {
            anyhow::anyhow!(
                "annotation {} refers to image {}, which {} does not list",
                ann.id,
                ann.image_id,
                annotations.display()
            )
        })?;
        let rle = ann
            .to_rle(image.width, image.height)
            .with_context(|| format!("annotation {}", ann.id))?;
        rows.insert(ann.id, (rle.area(), rle.to_bbox()));
    }
    if json {
        let out: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(id, (area, bbox))| {
                (
                    id.to_string(),
                    serde_json::json!({"area": area, "bbox": bbox}),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!("{:>12} {:>10}  bbox [x, y, w, h]", "annotation", "area");
        for (id, (area, bbox)) in &rows {
            println!("{id:>12} {area:>10}  {bbox:?}");
        }
    }
    Ok(())
}

fn run_compose(args: ComposeArgs) -> anyhow::Result<()> {
    if args.out.join("config.json").exists() && !args.overwrite {
        anyhow::bail!(
            "{} already holds a checkpoint: pass --overwrite to replace it, or choose another --out",
            args.out.display()
        );
    }
    tch::manual_seed(args.seed);
    let (model, vs, tokenizer) = RegionGpt::compose(
        &args.vision,
        &args.llm,
        args.refiner,
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .context("while composing the RGPT model")?;
    model
        .save_pretrained(&vs, &tokenizer, &[&args.vision, &args.llm], &args.out, None)
        .with_context(|| format!("while saving {}", args.out.display()))?;
    println!("wrote an RGPT checkpoint to {}", args.out.display());
    Ok(())
}

fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    // Without --raw, the template the model was trained with (an RGPT
    // checkpoint records it; a text-only LLM gets LLaVA's vicuna_v1).
    let template = |trained: Template| if args.raw { Template::Raw } else { trained };
    let stdout = std::io::stdout();
    let stream = !args.json;
    let mut on_text = |text: &str| {
        if stream {
            let mut out = stdout.lock();
            // A closed pipe (e.g. `| head`) must not abort generation.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    };
    let completion = match &args.image {
        Some(image_path) => {
            let regions = parse_regions(&args.regions)?;
            let image = load_image(image_path)?;
            let generator = RegionGenerator::load(&args.model, device, kind)
                .with_context(|| format!("while loading {}", args.model.display()))?;
            let mut config = generation_config(&args.sampling, generator.default_config());
            config.top_logprobs = args.top_logprobs;
            generator
                .complete(
                    &args.prompt,
                    &image,
                    &regions,
                    template(generator.model.template()),
                    &config,
                    &mut on_text,
                )
                .map_err(|e| name_region(e, &args.regions))?
        }
        None => {
            let mut progress = LoadBar::new(&args.model);
            let generator =
                TextGenerator::load(&args.model, device, kind, &mut |p| progress.update(p))
                    .with_context(|| format!("while loading {}", args.model.display()))?;
            progress.finish();
            let mut config = generation_config(&args.sampling, generator.default_config());
            config.top_logprobs = args.top_logprobs;
            generator.complete(
                &args.prompt,
                template(Template::VicunaV1),
                &config,
                &mut on_text,
            )?
        }
    };
    report(&args, &completion);
    Ok(())
}

/// The sampling flags on top of a model's defaults (EOS, pad).
fn generation_config(args: &SamplingArgs, mut config: GenerationConfig) -> GenerationConfig {
    config.max_new_tokens = args.max_new_tokens as usize;
    config.sampling = match args.temperature {
        Some(temperature) if !args.greedy => Sampling::Sample {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        _ => Sampling::Greedy,
    };
    config.repetition_penalty = args.repetition_penalty;
    config.seed = args.seed;
    config.stop_strings = args.stop.clone();
    config.ignore_eos = args.ignore_eos;
    config
}

fn parse_region(spec: &str) -> anyhow::Result<RegionSpec> {
    spec.parse::<RegionSpec>()
        .with_context(|| format!("invalid --region `{spec}`"))
}

fn parse_regions(specs: &[String]) -> anyhow::Result<Vec<RegionSpec>> {
    specs.iter().map(|spec| parse_region(spec)).collect()
}

/// Puts the user's own text of a region in front of an error about it (a
/// mask file's path, say, which the parsed region no longer knows).
fn name_region(error: ModelError, specs: &[String]) -> anyhow::Error {
    let spec = match &error {
        ModelError::Region { index, .. } => specs.get(*index).cloned(),
        _ => None,
    };
    match spec {
        Some(spec) => anyhow::Error::new(error).context(format!("--region `{spec}`")),
        None => error.into(),
    }
}

fn run_chat(args: ChatArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    let regions = parse_regions(&args.regions)?;
    let image = load_image(&args.image)?;
    let generator = RegionGenerator::load(&args.model, device, kind)
        .with_context(|| format!("while loading {}", args.model.display()))?;
    let config = generation_config(&args.sampling, generator.default_config());
    let mut chat = RegionChat::new(&generator, &image, generator.model.template())?;
    for region in regions {
        chat.add_region(region)
            .map_err(|e| name_region(e, &args.regions))?;
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chatting about {} ({} region(s)); /region SPEC adds one, /reset, /quit",
            args.image.display(),
            chat.regions().len()
        );
    }
    let mut bytes = Vec::new();
    loop {
        if interactive {
            eprint!("> ");
        }
        bytes.clear();
        if stdin.lock().read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        // A line that is not UTF-8 costs that line, not the conversation.
        let Ok(line) = std::str::from_utf8(&bytes) else {
            eprintln!("error: the line is not UTF-8 text; type it again");
            continue;
        };
        let input = line.trim();
        let outcome = match input.split_once(char::is_whitespace).unwrap_or((input, "")) {
            ("", _) => continue,
            ("/quit" | "/exit", _) => break,
            ("/reset", _) => {
                chat.reset();
                println!("(conversation and regions cleared; the image stays)");
                Ok(())
            }
            ("/region", spec) => parse_region(spec.trim()).and_then(|region| {
                let number = chat
                    .add_region(region)
                    .with_context(|| format!("/region `{}`", spec.trim()))?;
                println!(
                    "(region {number} added: refer to it with <region> in the next question; {} waiting)",
                    chat.pending_regions()
                );
                Ok(())
            }),
            (command, _) if command.starts_with('/') => Err(anyhow::anyhow!(
                "unknown command `{command}`: use /region SPEC, /reset or /quit"
            )),
            _ => {
                let stdout = std::io::stdout();
                let mut on_text = |text: &str| {
                    let mut out = stdout.lock();
                    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
                };
                chat.ask(input, &config, &mut on_text)
                    .map(|_| println!())
                    .map_err(anyhow::Error::from)
            }
        };
        // A mistake costs the one line, not the conversation.
        if let Err(e) = outcome {
            eprintln!("error: {}", one_line(&e));
        }
    }
    Ok(())
}

fn report(args: &GenerateArgs, completion: &rgpt_llm::Completion) {
    if args.json {
        let report = serde_json::json!({
            "prompt_ids": completion.prompt_ids,
            "token_ids": completion.output.token_ids,
            "text": completion.text,
            "finish_reason": completion.output.finish_reason,
            "top_logprobs": completion.output.top_logprobs,
            "timing": completion.timing,
        });
        println!("{report}");
    } else {
        println!();
    }
}

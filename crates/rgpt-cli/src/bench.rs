//! `rgpt bench decode|prefill|mask-pool|e2e (--model DIR | --random-init SPEC)`.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rgpt_bench::bandwidth::{self, Bandwidth};
use rgpt_bench::decode::{self, DecodeOptions};
use rgpt_bench::e2e::{self, E2eOptions};
use rgpt_bench::mask_pool::{self, MaskPoolOptions};
use rgpt_bench::spec::E2eModel;
use rgpt_bench::ModelSpec;

use crate::runtime::RuntimeArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Decode tokens/s after a prompt, against the memory-traffic bound.
    Decode(ModelArgs),
    /// Prompt tokens/s read in one prefill.
    Prefill(ModelArgs),
    /// Mask pooling over a refined feature map, against the memory-traffic bound.
    MaskPool(MaskPoolArgs),
    /// An RGPT answering about a 336 px image and 3 regions: time to first
    /// token and decode tokens/s.
    E2e(E2eArgs),
}

/// The model a benchmark runs.
#[derive(Args)]
struct Source {
    /// A checkpoint directory: LLaMA, LLaVA or RGPT for decode and
    /// prefill (its decoder is timed), RGPT for e2e.
    #[arg(long, conflicts_with = "random_init")]
    model: Option<PathBuf>,
    /// A shape with random weights: llama-7b (Vicuna-7B's) or llama-1b
    /// (TinyLlama's) for decode and prefill, rgpt-7b (CLIP ViT-L/14-336
    /// and Vicuna-7B) for e2e, or a config.json of the kind.
    #[arg(long, value_name = "SPEC")]
    random_init: Option<String>,
}

impl Source {
    fn name(&self) -> String {
        match (&self.model, &self.random_init) {
            (Some(dir), _) => dir.display().to_string(),
            (None, Some(spec)) => format!("{spec} (random)"),
            (None, None) => String::new(),
        }
    }
}

#[derive(Args)]
struct E2eArgs {
    #[command(flatten)]
    source: Source,
    /// The image's side in pixels.
    #[arg(long, default_value_t = 336)]
    image_size: u32,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed runs, after one untimed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct ModelArgs {
    #[command(flatten)]
    source: Source,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: i64,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: i64,
    #[arg(long, default_value_t = 64)]
    new_tokens: i64,
    /// Timed runs, after one untimed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct MaskPoolArgs {
    /// Images.
    #[arg(long, default_value_t = 1)]
    batch: i64,
    #[arg(long, default_value_t = 1024)]
    channels: i64,
    /// The feature grid's side (96: CLIP ViT-L/14-336's 24 refined 4x).
    #[arg(long, default_value_t = 96)]
    grid: i64,
    /// Regions per image.
    #[arg(long, default_value_t = 3)]
    regions: i64,
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The copy the bandwidth is measured with: 256 MiB, larger than any cache.
const BANDWIDTH_BYTES: u64 = 256 << 20;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Bench::Decode(args) => run_decode(args, false),
        Bench::Prefill(args) => run_decode(args, true),
        Bench::MaskPool(args) => run_mask_pool(args),
        Bench::E2e(args) => run_e2e(args),
    }
}

fn run_e2e(args: E2eArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    let loaded = E2eModel::load(
        args.source.model.as_deref(),
        args.source.random_init.as_deref(),
        device,
        kind,
    )?;
    let options = E2eOptions {
        image_size: args.image_size,
        new_tokens: args.new_tokens,
        runs: args.runs,
    };
    let report = e2e::run(
        &loaded.model,
        &loaded.preprocessor,
        &loaded.prompt,
        &options,
    )?;
    let name = args.source.name();
    if args.json {
        print_json(&report, "e2e", Some(name), &args.runtime, device)?;
    } else {
        println!(
            "e2e {name} on {device:?} {}: a {}px image, {} regions, {} prompt ids: first token \
             after {:.1} ms, then {:.1} tokens/s ({} tokens in {:.1} ms)",
            args.runtime.dtype,
            report.image_size,
            report.regions,
            report.prompt_ids,
            report.ttft_ms,
            report.decode_tokens_per_s,
            report.new_tokens,
            report.total_ms
        );
    }
    Ok(())
}

/// Prints `report` as one JSON object, with which bench ran, on what model
/// (when it has one), device and dtype.
fn print_json(
    report: &impl serde::Serialize,
    bench: &str,
    model: Option<String>,
    runtime: &RuntimeArgs,
    device: tch::Device,
) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(report)?;
    value["bench"] = bench.into();
    if let Some(model) = model {
        value["model"] = model.into();
    }
    value["device"] = format!("{device:?}").into();
    value["dtype"] = runtime.dtype.clone().into();
    println!("{value}");
    Ok(())
}

fn measure_bandwidth(device: tch::Device) -> anyhow::Result<Bandwidth> {
    bandwidth::measure(device, BANDWIDTH_BYTES, 5).context("while measuring the bandwidth")
}

fn run_decode(args: ModelArgs, prefill_only: bool) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    let name = args.source.name();
    let spec = match (&args.source.model, &args.source.random_init) {
        (Some(dir), _) => ModelSpec::Dir(dir.clone()),
        (None, Some(spec)) => ModelSpec::random(spec)?,
        (None, None) => anyhow::bail!(
            "give the model: --model DIR, or --random-init llama-7b|llama-1b|CONFIG.json"
        ),
    };
    let bandwidth = measure_bandwidth(device)?;
    let (model, vs) = spec
        .llama(device, kind)
        .with_context(|| format!("while building {name}"))?;
    let options = DecodeOptions {
        batch: args.batch,
        prompt_tokens: args.prompt_tokens,
        // A prefill alone still decodes the two tokens a run needs.
        new_tokens: if prefill_only { 2 } else { args.new_tokens },
        runs: args.runs,
    };
    let report = decode::run(&model, &vs, &options, &bandwidth)?;
    let what = if prefill_only { "prefill" } else { "decode" };
    if args.json {
        print_json(&report, what, Some(name), &args.runtime, device)?;
    } else if prefill_only {
        println!(
            "prefill {} on {device:?} {}: batch {} x {} tokens in {:.2} ms, {:.0} tokens/s",
            name,
            args.runtime.dtype,
            report.batch,
            report.prompt_tokens,
            report.prefill_ms,
            report.prefill_tokens_per_s
        );
    } else {
        println!(
            "decode {} on {device:?} {}: batch {}, {:.2} ms a step, {:.1} tokens/s; a step reads \
             {:.2} GB at {:.1} GB/s: bound {:.1} tokens/s, {:.1}% of it",
            name,
            args.runtime.dtype,
            report.batch,
            report.decode_ms_per_step,
            report.decode_tokens_per_s,
            (report.weight_bytes + report.kv_bytes_per_step) as f64 / 1e9,
            report.bandwidth_bytes_per_s / 1e9,
            report.bound_tokens_per_s,
            report.bound_fraction * 100.0
        );
    }
    Ok(())
}

fn run_mask_pool(args: MaskPoolArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    let bandwidth = measure_bandwidth(device)?;
    let options = MaskPoolOptions {
        batch: args.batch,
        channels: args.channels,
        grid: args.grid,
        regions: args.regions,
        runs: args.runs,
    };
    let report = mask_pool::run(device, kind, &options, &bandwidth)?;
    if args.json {
        print_json(&report, "mask-pool", None, &args.runtime, device)?;
    } else {
        println!(
            "mask-pool on {device:?} {}: {} x {} channels on {}x{}, {} regions each: {:.3} ms; \
             {:.1} MB at {:.1} GB/s: bound {:.3} ms, {:.1}% of it",
            args.runtime.dtype,
            report.batch,
            report.channels,
            report.grid,
            report.grid,
            report.regions,
            report.ms,
            report.bytes as f64 / 1e6,
            report.bandwidth_bytes_per_s / 1e9,
            report.bound_ms,
            report.bound_fraction * 100.0
        );
    }
    Ok(())
}

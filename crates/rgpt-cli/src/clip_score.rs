//! `rgpt clip-score --model DIR --image PATH [--region SPEC] --text T...`:
//! CLIP's embeddings of an image (or a region's crop) and of texts, and
//! `logits_per_image` as transformers' `CLIPModel` returns them.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rgpt_region::RegionSpec;
use rgpt_vision::clip_text::ClipModel;
use rgpt_vision::clip_tokenizer::ClipTokenizer;
use rgpt_vision::preprocess::{load_image, PreprocessorConfig};

use crate::runtime::RuntimeArgs;

#[derive(Args)]
pub struct ClipScoreArgs {
    /// A CLIPModel directory (both towers, tokenizer.json,
    /// preprocessor_config.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    image: PathBuf,
    /// Score this region's crop instead of the whole image (its box plus
    /// `--margin`).
    #[arg(long, value_name = "SPEC")]
    region: Option<String>,
    /// With --region: the crop grows by this fraction of the box's width
    /// and height on each side.
    #[arg(long, default_value_t = 0.0)]
    margin: f64,
    /// A text to score; repeat for several.
    #[arg(long = "text", required = true)]
    texts: Vec<String>,
    /// Print JSON (the default prints a line per text).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: ClipScoreArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    let dir = &args.model;
    let (model, _vs) = ClipModel::from_pretrained(dir, device, kind)
        .with_context(|| format!("while loading {}", dir.display()))?;
    let text_config = model.text.config();
    let pad = text_config.pad_token_id.unwrap_or(text_config.eos_token_id);
    let tokenizer = ClipTokenizer::from_dir(dir, text_config.max_position_embeddings, pad)?;
    let preprocessor = PreprocessorConfig::from_file(dir.join("preprocessor_config.json"))?;
    let mut image = load_image(&args.image)?;
    if let Some(spec) = &args.region {
        let region: RegionSpec = spec
            .parse()
            .with_context(|| format!("invalid --region `{spec}`"))?;
        let [x0, y0, x1, y1] = region
            .crop_box(image.height(), image.width(), args.margin)
            .with_context(|| format!("--region `{spec}`"))?;
        image = image::imageops::crop_imm(&image, x0, y0, x1 - x0, y1 - y0).to_image();
    }
    let pixel_values = preprocessor
        .preprocess(&image)?
        .pixel_values
        .unsqueeze(0)
        .to_device(device);
    let (ids, mask) = tokenizer.encode_batch(&args.texts, device)?;
    let scores = tch::no_grad(|| model.scores(&pixel_values, &ids, Some(&mask)))?;
    let floats = |t: &tch::Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(Vec::try_from(
            t.to_kind(tch::Kind::Float)
                .to_device(tch::Device::Cpu)
                .flatten(0, -1),
        )?)
    };
    let image_embeds = floats(&scores.image_embeds)?;
    let logits = floats(&scores.logits_per_image)?;
    if args.json {
        let text_embeds: Vec<Vec<f32>> = Vec::try_from(
            scores
                .text_embeds
                .to_kind(tch::Kind::Float)
                .to_device(tch::Device::Cpu),
        )?;
        let report = serde_json::json!({
            "image_embeds": image_embeds,
            "text_embeds": text_embeds,
            "logits_per_image": logits,
        });
        println!("{report}");
    } else {
        for (text, logit) in args.texts.iter().zip(&logits) {
            println!("{logit:9.4}  {text}");
        }
    }
    Ok(())
}

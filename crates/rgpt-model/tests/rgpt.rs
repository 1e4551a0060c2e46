//! RegionGPT end to end on the tiny fixture (`scripts/fixtures/rgpt.py`):
//! an image and regions of different shapes through preprocessing, the
//! refiner, mask pooling, the connector and the splice. The checks here are
//! internal: an area-pooled region's feature equals a hand-derived mean of
//! the refined map, answers depend on the region, and bad regions fail
//! cleanly. tests/regiongpt_reference.rs compares the default (reference)
//! region path with RegionGPT's reference code.
use std::path::PathBuf;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Conversation, Template, Tokenizer};
use rgpt_model::rgpt::{RegionGpt, RegionPrompt};
use rgpt_model::ModelError;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{load_image, ImageTransform, PreprocessorConfig};
use rgpt_vision::refiner::RefinerKind;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rgpt-tiny")
}

fn image() -> (Tensor, ImageTransform) {
    let config = PreprocessorConfig::from_file(fixture().join("preprocessor_config.json")).unwrap();
    let image = load_image(fixture().join("image.png")).unwrap();
    let processed = config.preprocess(&image).unwrap();
    (processed.pixel_values.unsqueeze(0), processed.transform)
}

fn answer(
    model: &RegionGpt,
    tokenizer: &Tokenizer,
    question: &str,
    regions: &[RegionSpec],
) -> Result<Vec<i64>, ModelError> {
    Ok(answer_with_logprobs(model, tokenizer, question, regions)?.token_ids)
}

/// The greedy answer with each step's top-5 log-probs.
fn answer_with_logprobs(
    model: &RegionGpt,
    tokenizer: &Tokenizer,
    question: &str,
    regions: &[RegionSpec],
) -> Result<rgpt_llm::generation::SequenceOutput, ModelError> {
    let prompt = Conversation::single_turn(Template::VicunaV1, question).prompt();
    let ids = tokenizer.encode(&prompt, true).unwrap();
    let (pixel_values, transform) = image();
    let request = RegionPrompt {
        prompt_ids: &ids,
        pixel_values: &pixel_values,
        transform: &transform,
        regions,
    };
    let config = GenerationConfig {
        max_new_tokens: 8,
        ignore_eos: true,
        top_logprobs: 5,
        ..GenerationConfig::default()
    };
    let region_id = tokenizer.token_to_id("<region>").unwrap();
    let mut out = model.generate(
        &request,
        region_id,
        &config,
        Some(tokenizer),
        &mut |_, _| {},
    )?;
    Ok(out.sequences.remove(0))
}

/// A copy of the fixture's files in a fresh temporary directory.
fn fixture_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Writes `dir/config.json`: the fixture's, with `rgpt.<field>` set.
fn edit_config(dir: &std::path::Path, field: &str, value: serde_json::Value) {
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    config["rgpt"][field] = value;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn answers_depend_on_the_region() {
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let boxed: RegionSpec = "box:8,5,24,20".parse().unwrap();
    let poly: RegionSpec = "poly:30,2,39,2,39,28,30,28".parse().unwrap();
    let a = answer_with_logprobs(
        &model,
        &tokenizer,
        "<image>\nWhat is <region>?",
        std::slice::from_ref(&boxed),
    )
    .unwrap();
    let b = answer_with_logprobs(
        &model,
        &tokenizer,
        "<image>\nWhat is <region>?",
        std::slice::from_ref(&poly),
    )
    .unwrap();
    assert_eq!(a.token_ids.len(), 8);
    // The random tiny model may pick the same words for both; the
    // distribution of its first answer token must still differ.
    let differs = a.top_logprobs[0]
        .iter()
        .zip(&b.top_logprobs[0])
        .any(|(x, y)| x.id != y.id || (x.logprob - y.logprob).abs() > 1e-3);
    assert!(
        a.token_ids != b.token_ids || differs,
        "different regions, same answer and log-probs: the region embedding is not reaching the decoder"
    );
    let two = answer(
        &model,
        &tokenizer,
        "<image>\nCompare <region> and <region>.",
        &[boxed, poly],
    )
    .unwrap();
    assert_eq!(two.len(), 8);
}

/// Area-weighted pooling (`mask_pool: area`), this project's own: the
/// reference's (the default) is checked in tests/regiongpt_reference.rs.
#[test]
fn a_whole_image_region_pools_the_rows_the_image_covers() {
    let _guard = tch::no_grad_guard();
    let dir = fixture_copy("area");
    edit_config(&dir, "mask_pool", "area".into());
    let (model, _vs) = RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (pixel_values, transform) = image();
    let (refined, tokens) = model.encode_image(&pixel_values).unwrap();
    // 28 px / patch 7 = a 4x4 backbone grid, refined 4x to 16x16; image
    // tokens pool it back to 4x4.
    assert_eq!(refined.size(), [1, 16, 16, 16]);
    assert_eq!(tokens.size(), [1, 16, 16]);
    // The 40x30 image is padded to 40x40 with 5 rows above and below, then
    // scaled to 28: its rows cover [3.5, 24.5) px, which is refined rows
    // [2, 14) exactly (1.75 px per refined row) and every column.
    let whole: RegionSpec = "box:0,0,40,30".parse().unwrap();
    let pooled = model
        .region_features(&refined, &transform, &[whole])
        .unwrap();
    let expected = refined
        .narrow(2, 2, 12)
        .mean_dim(&[2i64, 3][..], false, Kind::Float);
    let diff = f64::try_from((&pooled - &expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "pooled vs hand mean: {diff:e}");
}

#[test]
fn bad_regions_are_errors_naming_the_region() {
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let inside: RegionSpec = "box:8,5,24,20".parse().unwrap();
    let outside: RegionSpec = "box:100,100,120,120".parse().unwrap();
    let err = answer(
        &model,
        &tokenizer,
        "<image>\n<region> or <region>?",
        &[inside.clone(), outside],
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("region 1:"), "{err}");
    let err = answer(
        &model,
        &tokenizer,
        "<image>\n<region> or <region>?",
        &[inside],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 <region> placeholder(s) but 1 region(s)"),
        "{err}"
    );
}

#[test]
fn saved_checkpoints_reload_to_the_same_answers() {
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let region: RegionSpec = "box:8,5,24,20".parse().unwrap();
    let before = answer(
        &model,
        &tokenizer,
        "<image>\nWhat is <region>?",
        std::slice::from_ref(&region),
    )
    .unwrap();

    let out = std::env::temp_dir().join(format!("rgpt-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    // A 100 kB shard limit splits the ~350 kB fixture into several shards.
    model
        .save_pretrained(&vs, &tokenizer, &[&fixture()], &out, Some(100_000))
        .unwrap();
    assert!(out.join("model.safetensors.index.json").is_file());
    let shards: Vec<u64> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("model-")
        })
        .map(|p| p.metadata().unwrap().len())
        .collect();
    assert!(shards.len() > 1, "{} shard(s)", shards.len());
    // The embedding table (801 x 32 f32 = 102 kB) is the one tensor above the limit.
    assert!(shards.iter().all(|&len| len < 110_000), "{shards:?}");
    assert!(!out.join("model.safetensors").exists());
    for file in [
        "tokenizer.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} copied");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "rgpt");
    assert_eq!(config["rgpt"]["refiner"], "deconv");
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));

    let (reloaded, _vs) = RegionGpt::from_pretrained(&out, Device::Cpu, Kind::Float).unwrap();
    let after = answer(
        &reloaded,
        &tokenizer,
        "<image>\nWhat is <region>?",
        &[region],
    )
    .unwrap();
    assert_eq!(before, after);
}

#[test]
fn a_composed_rgpt_loads_its_parts_and_round_trips() {
    let fixtures = fixture().join("..");
    let (vision_dir, llm_dir) = (
        fixtures.join("clip-vision-tiny"),
        fixtures.join("llama-mha-tied"),
    );
    let (model, vs, tokenizer) = RegionGpt::compose(
        &vision_dir,
        &llm_dir,
        RefinerKind::Deconv,
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let image_id = tokenizer.token_to_id("<image>").unwrap();
    let region_id = tokenizer.token_to_id("<region>").unwrap();
    assert_eq!(model.llava.config.image_token_index, image_id);
    assert!(region_id > image_id);
    // Tower and decoder weights are the source checkpoints'.
    let vars = vs.variables();
    let clip = rgpt_weights::Checkpoint::open(&vision_dir).unwrap();
    let name = "embeddings.patch_embedding.weight";
    assert!(vars[&format!("vision_tower.{name}")].equal(&clip.tensor(name).unwrap()));
    let llama = rgpt_weights::Checkpoint::open(&llm_dir).unwrap();
    let name = "model.layers.1.mlp.up_proj.weight";
    assert!(vars[&format!("language_model.{name}")].equal(&llama.tensor(name).unwrap()));
    // Refiner and connector are fresh, trainable and not zero.
    for name in [
        "feature_refiner.deconv1.weight",
        "multi_modal_projector.linear_1.weight",
    ] {
        assert!(
            f64::try_from(vars[name].abs().sum(Kind::Float)).unwrap() > 0.0,
            "{name}"
        );
    }

    let out = std::env::temp_dir().join(format!("rgpt-compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    model
        .save_pretrained(&vs, &tokenizer, &[&vision_dir, &llm_dir], &out, None)
        .unwrap();
    let (reloaded, reloaded_vs) =
        RegionGpt::from_pretrained(&out, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(reloaded.refiner.kind(), RefinerKind::Deconv);
    let reloaded_vars = reloaded_vs.variables();
    assert_eq!(reloaded_vars.len(), vars.len());
    for (name, var) in &vars {
        assert!(
            var.equal(&reloaded_vars[name]),
            "{name} differs after save + load"
        );
    }
    let reloaded_tokenizer = Tokenizer::from_dir(&out).unwrap();
    assert_eq!(reloaded_tokenizer.token_to_id("<region>"), Some(region_id));
}

#[test]
fn a_siglip_backbone_composes_pools_regions_and_reloads() {
    let fixtures = fixture().join("..");
    let (vision_dir, llm_dir) = (
        fixtures.join("siglip-vision-tiny"),
        fixtures.join("llama-mha-tied"),
    );
    tch::manual_seed(5);
    let (model, vs, tokenizer) = RegionGpt::compose(
        &vision_dir,
        &llm_dir,
        RefinerKind::Deconv,
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    assert!(matches!(
        model.llava.vision,
        rgpt_vision::tower::VisionTower::Siglip(_)
    ));
    // SigLIP has no CLS token: every patch is kept.
    assert_eq!(model.llava.config.vision_feature_select_strategy, "full");
    let preprocessor = PreprocessorConfig::from_json_str(
        r#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 32}, "resample": 3,
            "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    let processed = preprocessor
        .preprocess(&load_image(fixture().join("image.png")).unwrap())
        .unwrap();
    let pixel_values = processed.pixel_values.unsqueeze(0);
    let (refined, tokens) = {
        let _guard = tch::no_grad_guard();
        model.encode_image(&pixel_values).unwrap()
    };
    // 32 px / patch 4 = an 8x8 grid of 32 channels, refined 4x.
    assert_eq!(refined.size(), [1, 32, 32, 32]);
    assert_eq!(tokens.size(), [1, 64, 32]);
    let ids = tokenizer
        .encode(
            &Conversation::single_turn(Template::VicunaV1, "<image>\nWhat is <region>?").prompt(),
            true,
        )
        .unwrap();
    let region: RegionSpec = "box:8,5,24,20".parse().unwrap();
    let config = GenerationConfig {
        max_new_tokens: 4,
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let region_id = tokenizer.token_to_id("<region>").unwrap();
    let generate = |model: &RegionGpt| {
        model
            .generate(
                &RegionPrompt {
                    prompt_ids: &ids,
                    pixel_values: &pixel_values,
                    transform: &processed.transform,
                    regions: std::slice::from_ref(&region),
                },
                region_id,
                &config,
                None,
                &mut |_, _| {},
            )
            .unwrap()
            .sequences[0]
            .token_ids
            .clone()
    };
    let before = generate(&model);
    assert_eq!(before.len(), 4);
    let out = std::env::temp_dir().join(format!("rgpt-compose-siglip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    model
        .save_pretrained(&vs, &tokenizer, &[&vision_dir, &llm_dir], &out, None)
        .unwrap();
    let (reloaded, _reloaded_vs) =
        RegionGpt::from_pretrained(&out, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(generate(&reloaded), before);
}

#[test]
fn a_batch_answers_as_each_prompt_alone_and_scores_match_generation() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let region_id = tokenizer.token_to_id("<region>").unwrap();
    let (pixel_values, transform) = image();
    let ids = |q: &str| {
        tokenizer
            .encode(
                &Conversation::single_turn(Template::VicunaV1, q).prompt(),
                true,
            )
            .unwrap()
    };
    let short = ids("<image>\n<region>?");
    let long = ids("<image>\nCompare <region> with <region>, in detail please.");
    let one: Vec<RegionSpec> = vec!["box:8,5,24,20".parse().unwrap()];
    let two: Vec<RegionSpec> = vec![
        "point:30,10,4".parse().unwrap(),
        "poly:2,2,20,2,10,25".parse().unwrap(),
    ];
    let prompt = |ids, regions| RegionPrompt {
        prompt_ids: ids,
        pixel_values: &pixel_values,
        transform: &transform,
        regions,
    };
    let config = GenerationConfig {
        max_new_tokens: 6,
        ignore_eos: true,
        top_logprobs: 5,
        ..GenerationConfig::default()
    };
    let prompts = [prompt(&short, &one), prompt(&long, &two)];
    let batch = model
        .generate_batch(&prompts, region_id, &config, None, &mut |_, _| {})
        .unwrap();
    for (p, batched) in prompts.iter().zip(&batch.sequences) {
        let alone = model
            .generate(p, region_id, &config, None, &mut |_, _| {})
            .unwrap();
        assert_eq!(batched.token_ids, alone.sequences[0].token_ids);
        assert_eq!(batched.top_logprobs[0].len(), 5);
        assert_eq!(alone.sequences[0].top_logprobs[0].len(), 5);
        for (a, b) in batched.top_logprobs[0]
            .iter()
            .zip(&alone.sequences[0].top_logprobs[0])
        {
            assert_eq!(a.id, b.id);
            assert!((a.logprob - b.logprob).abs() < 1e-4);
        }
    }
    // Scoring single-token answers gives generation's first-step log-probs.
    let alone = model
        .generate(&prompts[1], region_id, &config, None, &mut |_, _| {})
        .unwrap();
    let top = &alone.sequences[0].top_logprobs[0];
    let candidates: Vec<Vec<i64>> = top.iter().map(|t| vec![t.id]).collect();
    let scores = model
        .score_answers(&prompts[1], region_id, &candidates)
        .unwrap();
    assert_eq!((top.len(), scores.len()), (5, 5));
    for (t, s) in top.iter().zip(&scores) {
        assert!(
            (f64::from(t.logprob) - s).abs() < 1e-4,
            "{} vs {s}",
            t.logprob
        );
    }
}

#[test]
fn the_conversation_template_comes_from_the_config_and_is_checked() {
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    // A config without `rgpt.conversation` gets the paper's template.
    assert_eq!(model.template(), Template::VicunaV1);

    let dir = fixture_copy("template");
    let write_conversation = |name: &str| edit_config(&dir, "conversation", name.into());
    write_conversation("vicuna_v1_no_system");
    let (bare, vs) = RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(bare.template(), Template::VicunaV1NoSystem);
    // Saving keeps it.
    let saved = dir.join("saved");
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    bare.save_pretrained(&vs, &tokenizer, &[&dir], &saved, None)
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["rgpt"]["conversation"], "vicuna_v1_no_system");

    write_conversation("chatml");
    let err = match RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("an unknown template is refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`chatml`") && err.contains("rgpt.conversation") && err.contains("vicuna_v1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn numbered_regions_carry_their_number_tokens_embedding() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (plain, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    // Any two tokens of the vocabulary serve as the numbers.
    let numbers = [7i64, 11];
    let dir = fixture_copy("numbered");
    edit_config(&dir, "region_index_tokens", serde_json::json!(numbers));
    let (numbered, vs) = RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();

    let prompt =
        Conversation::single_turn(Template::VicunaV1, "<image>\n<region> or <region>?").prompt();
    let ids = tokenizer.encode(&prompt, true).unwrap();
    let (pixel_values, transform) = image();
    let regions: Vec<RegionSpec> = vec![
        "box:2,3,20,18".parse().unwrap(),
        "poly:22,4,38,6,30,26".parse().unwrap(),
        "box:0,0,10,10".parse().unwrap(),
    ];
    let request = |regions| RegionPrompt {
        prompt_ids: &ids,
        pixel_values: &pixel_values,
        transform: &transform,
        regions,
    };
    // The k-th region's embedding is the model's own plus the embedding of
    // the k-th listed token; the image tokens are untouched.
    let (plain_image, plain_regions) = plain
        .encode_prompt_batch(&[request(&regions[..2])])
        .unwrap()
        .remove(0);
    let (image_tokens, numbered_regions) = numbered
        .encode_prompt_batch(&[request(&regions[..2])])
        .unwrap()
        .remove(0);
    let marks = numbered.llava.llm.embed(&Tensor::from_slice(&numbers));
    let diff = f64::try_from((&numbered_regions - &plain_regions - &marks).abs().max()).unwrap();
    assert!(diff < 1e-6, "numbered regions differ by {diff}");
    assert!(image_tokens.equal(&plain_image));

    // Saving keeps the numbers.
    let saved = dir.join("saved");
    numbered
        .save_pretrained(&vs, &tokenizer, &[&dir], &saved, None)
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["rgpt"]["region_index_tokens"],
        serde_json::json!(numbers)
    );

    // More regions than numbers is refused, saying how many are numbered.
    let err = numbered
        .encode_prompt_batch(&[request(&regions)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 regions") && err.contains("numbers only 2"),
        "{err}"
    );

    // `region_index_scale: region`: the same numbers, each rescaled to its
    // region's norm, so a number weighs as much as the region it marks.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["rgpt"]["region_index_scale"] = "region".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (scaled, _vs) = RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let (_, scaled_regions) = scaled
        .encode_prompt_batch(&[request(&regions[..2])])
        .unwrap()
        .remove(0);
    let row_norm = |t: &Tensor| t.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
    let scaled_marks = &marks / row_norm(&marks) * row_norm(&plain_regions);
    let diff = f64::try_from(
        (&scaled_regions - &plain_regions - scaled_marks)
            .abs()
            .max(),
    )
    .unwrap();
    assert!(diff < 1e-5, "scaled numbers differ by {diff}");
    let mark_norms = row_norm(&(scaled_regions - &plain_regions));
    let ratio = f64::try_from((mark_norms / row_norm(&plain_regions) - 1.0).abs().max()).unwrap();
    assert!(ratio < 1e-5, "a scaled number's norm is not its region's");

    // A number token outside the vocabulary is refused at load.
    edit_config(
        &dir,
        "region_index_tokens",
        serde_json::json!([1, 1_000_000]),
    );
    let err = match RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("a token outside the vocabulary is refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("rgpt.region_index_tokens") && err.contains("1000000"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

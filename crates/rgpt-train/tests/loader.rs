//! The training loader on real fixture files: COCO classification samples
//! with their JPEGs, tokenised with the tiny RGPT's tokenizer. Labels
//! token by token, skips, sharding, resumption and a training step on what
//! it yields.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rgpt_data::builders::classification::{build_classification, ClassificationOptions};
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::{PromptBank, Region, Sample, Turn};
use rgpt_llm::{Template, Tokenizer};
use rgpt_model::prompt::Placeholders;
use rgpt_model::prompt_ids::{prompt_ids, PromptTokenization};
use rgpt_model::rgpt::RegionGpt;
use rgpt_model::splice::Segment;
use rgpt_train::loader::{conversation_of, Loader, LoaderConfig, PromptFormat};
use rgpt_vision::preprocess::PreprocessorConfig;
use tch::{Device, Kind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn format() -> PromptFormat {
    let model = fixtures().join("rgpt-tiny");
    let tokenizer = Tokenizer::from_dir(&model).unwrap();
    let placeholders = Placeholders {
        image: tokenizer.token_to_id("<image>").unwrap(),
        region: tokenizer.token_to_id("<region>").unwrap(),
    };
    PromptFormat {
        tokenizer,
        template: Template::VicunaV1,
        placeholders,
        tokenization: rgpt_model::prompt_ids::PromptTokenization::Processor,
        preprocessor: PreprocessorConfig::from_file(model.join("preprocessor_config.json"))
            .unwrap(),
    }
}

fn coco_samples() -> Vec<Sample> {
    let coco = CocoDataset::read(&fixtures().join("datasets/coco/instances_val2017.json")).unwrap();
    let prompts =
        PromptBank::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts"))
            .unwrap();
    let options = ClassificationOptions {
        max_regions_per_sample: 1,
        ..ClassificationOptions::coco()
    };
    build_classification(&coco, &prompts, &options)
        .unwrap()
        .samples
}

fn config(batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        image_root: fixtures().join("datasets/coco/val2017"),
        batch_size,
        ..LoaderConfig::default()
    }
}

fn ids_of(loader: &Loader, epoch: u64, start: usize) -> Vec<String> {
    loader
        .batches(epoch, start)
        .into_iter()
        .flat_map(|b| b.unwrap().samples)
        .map(|s| s.id)
        .collect()
}

#[test]
fn labels_cover_the_answers_of_a_two_turn_two_region_conversation() {
    let sample = Sample {
        id: "two-turns".into(),
        image: Some("000000000139.jpg".into()),
        width: Some(64),
        height: Some(48),
        regions: vec![
            Region::Box([10.0, 8.0, 30.0, 40.0]),
            Region::Polygon(vec![vec![40.0, 10.0, 60.0, 10.0, 50.0, 30.0]]),
        ],
        conversations: vec![
            Turn::human("<image>\nWhat is <region>?"),
            Turn::gpt("A person."),
            Turn::human("And <region>?"),
            Turn::gpt("A car."),
        ],
        task: "test".into(),
        meta: None,
    };
    let format = format();
    let loader = Loader::new(vec![sample], format.clone(), config(1)).unwrap();
    let prepared = loader.prepare(0, 0).unwrap();
    // Token by token: every id of the rendered prompt, with its label.
    let text = "A chat between a curious user and an artificial intelligence assistant. The \
                assistant gives helpful, detailed, and polite answers to the user's questions. \
                USER: <image>\nWhat is <region>? ASSISTANT: A person.</s>USER: And <region>? \
                ASSISTANT: A car.</s>";
    let ids = format.tokenizer.encode(text, true).unwrap();
    let mut flat: Vec<(i64, bool)> = Vec::new();
    for segment in &prepared.segments {
        match segment {
            Segment::Text { ids, target } => flat.extend(ids.iter().map(|&id| (id, *target))),
            Segment::Image => flat.push((format.placeholders.image, false)),
            Segment::Region => flat.push((format.placeholders.region, false)),
        }
    }
    assert_eq!(flat.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    // The targets are exactly two runs: each answer with its </s>, right
    // after "ASSISTANT:"; every other token (system prompt, roles,
    // questions, image and region placeholders) is ignored.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (_, target)) in flat.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if *target && run.end == i => run.end = i + 1,
            _ if *target => runs.push(i..i + 1),
            _ => {}
        }
    }
    let decode =
        |range: std::ops::Range<usize>| format.tokenizer.decode(&ids[range], false).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(decode(runs[0].clone()).trim(), "A person.</s>");
    assert_eq!(decode(runs[1].clone()).trim(), "A car.</s>");
    for run in &runs {
        assert!(decode(0..run.start).ends_with("ASSISTANT:"));
    }
    assert!(decode(runs[0].end..runs[1].start)
        .trim()
        .starts_with("USER: And"));
    assert_eq!(runs[1].end, ids.len());
    let targets: Vec<i64> = flat.iter().filter(|(_, t)| *t).map(|(id, _)| *id).collect();
    assert_eq!(
        format.tokenizer.decode(&targets, false).unwrap(),
        "A person.</s> A car.</s>"
    );
    // Both regions were rasterised on the 64x48 image.
    assert_eq!(prepared.regions.len(), 2);
    let (pixels, transform) = prepared.image.as_ref().unwrap();
    assert_eq!(pixels.size(), [3, 28, 28]);
    assert_eq!(transform.original_size, (64, 48));
}

#[test]
fn regions_given_by_name_reach_the_model_as_their_names_tokens() {
    let sample = Sample {
        id: "named".into(),
        image: None,
        width: None,
        height: None,
        regions: vec![
            Region::Name("red circle".into()),
            Region::Name("blue square on the left".into()),
        ],
        conversations: vec![
            Turn::human("Which is the square: <region> or <region>?"),
            Turn::gpt("The second."),
        ],
        task: "text-test".into(),
        meta: None,
    };
    let mut format = format();
    format.template = Template::VicunaV1NoSystem;
    let loader = Loader::new(vec![sample.clone()], format.clone(), config(1)).unwrap();
    let prepared = loader.prepare(0, 0).unwrap();
    let names: Vec<Vec<i64>> = ["red circle", "blue square on the left"]
        .iter()
        .map(|name| format.tokenizer.encode(name, false).unwrap())
        .collect();
    assert_eq!(prepared.region_names, names);
    assert!(prepared.image.is_none() && prepared.regions.is_empty());
    let placeholders = prepared
        .segments
        .iter()
        .filter(|s| matches!(s, Segment::Region))
        .count();
    assert_eq!(placeholders, 2);
    // The template has no system prompt: the text starts with the turn.
    let Segment::Text { ids, .. } = &prepared.segments[0] else {
        panic!("the prompt starts with text");
    };
    assert!(format
        .tokenizer
        .decode(ids, true)
        .unwrap()
        .starts_with("USER: Which is the square:"));
    // The tiny model trains on it.
    let (model, _vs) =
        RegionGpt::from_pretrained(&fixtures().join("rgpt-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let out = model.forward_train(&[prepared.as_example()]).unwrap();
    assert!(f64::try_from(&out.loss).unwrap().is_finite());
    // A name with no tokens is refused by name.
    let mut empty = sample;
    empty.regions[1] = Region::Name(String::new());
    let err = Loader::new(vec![empty], format, config(1))
        .unwrap()
        .prepare(0, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no tokens") && err.contains("named"),
        "{err}"
    );
}

#[test]
fn bad_samples_are_skipped_and_counted_or_fail_when_strict() {
    let mut samples = coco_samples();
    let good = samples.len();
    let mut missing = samples[0].clone();
    missing.id = "missing-image".into();
    missing.image = Some("nope.jpg".into());
    let mut outside = samples[0].clone();
    outside.id = "outside".into();
    outside.regions = vec![Region::Box([500.0, 500.0, 600.0, 600.0])];
    samples.push(missing);
    samples.push(outside);
    let loader = Loader::new(samples.clone(), format(), config(3)).unwrap();
    let ids = ids_of(&loader, 0, 0);
    assert_eq!(ids.len(), good);
    let skips = loader.skips();
    assert_eq!(skips.count("image missing or unreadable"), 1);
    assert_eq!(skips.count("region invalid on its image"), 1);
    assert!(skips.to_string().contains("nope.jpg"), "{skips}");

    let strict = Loader::new(
        samples,
        format(),
        LoaderConfig {
            strict: true,
            seed: None,
            ..config(64)
        },
    )
    .unwrap();
    let err = strict
        .batches(0, 0)
        .into_iter()
        .find_map(Result::err)
        .expect("strict mode fails");
    let message = err.to_string();
    assert!(
        message.contains("missing-image") && message.contains("nope.jpg"),
        "{message}"
    );
}

#[test]
fn ranks_split_the_data_and_a_resumed_epoch_continues_exactly() {
    let samples = coco_samples();
    assert!(samples.len() >= 6, "{}", samples.len());
    let all: BTreeSet<String> = samples.iter().map(|s| s.id.clone()).collect();
    let rank = |rank| {
        Loader::new(
            samples.clone(),
            format(),
            LoaderConfig {
                rank,
                world_size: 2,
                ..config(2)
            },
        )
        .unwrap()
    };
    let (r0, r1) = (ids_of(&rank(0), 0, 0), ids_of(&rank(1), 0, 0));
    let union: BTreeSet<String> = r0.iter().chain(&r1).cloned().collect();
    assert_eq!(union, all);
    assert_eq!(r0.len() + r1.len(), all.len(), "no sample on both ranks");

    let loader = Loader::new(samples.clone(), format(), config(2)).unwrap();
    let epoch0 = ids_of(&loader, 0, 0);
    assert_ne!(epoch0, ids_of(&loader, 1, 0), "epochs reshuffle");
    // Resume after the first batch: the rest of the epoch, identical.
    let first = loader.batches(0, 0).recv().unwrap().unwrap();
    assert_eq!(first.next_position, 2);
    assert_eq!(ids_of(&loader, 0, first.next_position), epoch0[2..]);
}

#[test]
fn a_batch_trains_the_tiny_model() {
    let loader = Loader::new(coco_samples(), format(), config(4)).unwrap();
    let batch = loader.batches(0, 0).recv().unwrap().unwrap();
    assert_eq!(batch.samples.len(), 4);
    let (model, _vs) =
        RegionGpt::from_pretrained(&fixtures().join("rgpt-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let _guard = tch::no_grad_guard();
    let out = model.forward_train(&batch.examples()).unwrap();
    let loss = f64::try_from(&out.loss).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    // One category name (+ </s>) per sample is all the loss sees.
    assert!(out.target_tokens >= 8, "{}", out.target_tokens);
}

#[test]
fn a_sample_with_an_image_can_name_its_regions_in_meta() {
    let named = |names: serde_json::Value| Sample {
        id: "meta-named".into(),
        image: Some("000000000139.jpg".into()),
        width: Some(64),
        height: Some(48),
        regions: vec![
            Region::Box([10.0, 8.0, 30.0, 40.0]),
            Region::Box([40.0, 10.0, 60.0, 30.0]),
        ],
        conversations: vec![
            Turn::human("<image>\nWhat is <region> beside <region>?"),
            Turn::gpt("A person."),
        ],
        task: "test".into(),
        meta: Some(serde_json::json!({ "region_names": names })),
    };
    let format = format();
    let prepare = |sample| {
        Loader::new(vec![sample], format.clone(), config(1))
            .unwrap()
            .prepare(0, 0)
    };
    let prepared = prepare(named(serde_json::json!(["red circle", "blue square"]))).unwrap();
    let expected: Vec<Vec<i64>> = ["red circle", "blue square"]
        .iter()
        .map(|name| format.tokenizer.encode(name, false).unwrap())
        .collect();
    assert_eq!(prepared.region_targets, expected);
    // Names are targets, not the regions themselves: the regions keep
    // their geometry and no region is read by name.
    assert_eq!(prepared.regions.len(), 2);
    assert!(prepared.region_names.is_empty());
    // The model measures them.
    let (model, _vs) =
        RegionGpt::from_pretrained(&fixtures().join("rgpt-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let out = model.forward_train(&[prepared.as_example()]).unwrap();
    assert_eq!(out.alignment.map(|(_, n)| n), Some(2));

    // One name per region, and names are strings.
    let err = prepare(named(serde_json::json!(["red circle"])))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("meta-named") && err.contains("names 1 regions of 2"),
        "{err}"
    );
    let err = prepare(named(serde_json::json!([1, 2])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a list of strings"), "{err}");
}

/// The trainer prompts a checkpoint the way it was trained: an original
/// LLaVA checkpoint (`LlavaLlamaForCausalLM`) gets LLaVA's
/// `tokenizer_image_token` ids, the text after the image starting with its
/// own `▁`, so training and generation read the same ids.
#[test]
fn an_original_llava_checkpoint_trains_on_llavas_prompt_ids() {
    let model = fixtures().join("llava-original-tiny");
    let how = PromptTokenization::for_checkpoint(&model).unwrap();
    assert_eq!(how, PromptTokenization::TokenizerImageToken);
    let tokenizer = how.tokenizer(&model).unwrap();
    let image_id = -200;
    let sample = Sample {
        id: "llava".into(),
        image: Some("000000000139.jpg".into()),
        width: None,
        height: None,
        regions: Vec::new(),
        conversations: vec![
            Turn::human("<image>\nWhat is in the image?"),
            Turn::gpt("A person."),
        ],
        task: "test".into(),
        meta: None,
    };
    let format = PromptFormat {
        tokenizer: tokenizer.clone(),
        template: Template::VicunaV1,
        placeholders: Placeholders {
            image: image_id,
            region: i64::MIN,
        },
        tokenization: how,
        preprocessor: PreprocessorConfig::from_file(model.join("preprocessor_config.json"))
            .unwrap(),
    };
    let rendered = conversation_of(&sample, Template::VicunaV1).render().text;
    let loader = Loader::new(vec![sample], format, config(1)).unwrap();
    let prepared = loader.prepare(0, 0).unwrap();
    let flat: Vec<i64> = prepared
        .segments
        .iter()
        .flat_map(|segment| match segment {
            Segment::Text { ids, .. } => ids.clone(),
            Segment::Image => vec![image_id],
            Segment::Region => vec![i64::MIN],
        })
        .collect();
    let llava = prompt_ids(&tokenizer, &rendered, how, image_id).unwrap();
    let processor = prompt_ids(
        &tokenizer,
        &rendered,
        PromptTokenization::Processor,
        image_id,
    )
    .unwrap();
    assert_ne!(llava, processor, "the two ways differ on this prompt");
    assert_eq!(flat, llava);
}

/// The worker count changes how fast batches come, not what is in them:
/// the same samples in the same batches, with the same token ids, pixels
/// and regions, from 1 worker and from 4.
#[test]
fn batches_are_the_same_with_one_worker_and_with_four() {
    // Several epochs' worth, so batches cross epoch boundaries' reshuffles.
    let samples: Vec<Sample> = coco_samples().into_iter().cycle().take(9).collect();
    let batches = |workers: usize| {
        let config = LoaderConfig {
            workers,
            seed: Some(5),
            ..config(2)
        };
        let loader = Loader::new(samples.clone(), format(), config).unwrap();
        (0..3)
            .flat_map(|epoch| loader.batches(epoch, 0).into_iter().map(Result::unwrap))
            .collect::<Vec<_>>()
    };
    let (one, four) = (batches(1), batches(4));
    assert_eq!(one.len(), 15, "5 batches of 2 (the last of 1) per epoch");
    assert_eq!(one.len(), four.len());
    for (i, (a, b)) in one.iter().zip(&four).enumerate() {
        assert_eq!(a.next_position, b.next_position, "batch {i}");
        assert_eq!(a.samples.len(), b.samples.len(), "batch {i}");
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert_eq!((&x.id, x.position), (&y.id, y.position), "batch {i}");
            assert_eq!(x.segments, y.segments, "batch {i}: {}", x.id);
            assert_eq!(x.regions, y.regions, "batch {i}: {}", x.id);
            let (px, py) = (x.image.as_ref().unwrap(), y.image.as_ref().unwrap());
            assert!(px.0.equal(&py.0), "batch {i}: {}: pixels", x.id);
        }
    }
}

//! One region path for every caller (issue 24): a checkpoint that numbers
//! its regions (`rgpt.region_index_tokens`, as the demo's model does) gives
//! the same region embeddings, the same greedy answer and the same
//! log-probs through `rgpt generate`, `rgpt chat`, the eval runner and the
//! training forward. Before, `generate` and `chat` fed such a checkpoint
//! un-numbered regions, and no test saw it because the fixture numbers none.
mod common;

use std::path::{Path, PathBuf};

use rgpt_data::format::Region;
use rgpt_eval::items::{EvalItem, TaskKind};
use rgpt_eval::predictions::PredictionStore;
use rgpt_eval::runner::Evaluator;
use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Completion, Conversation, Role};
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_model::rgpt::{ExampleImage, RegionPrompt, TrainingExample};
use rgpt_model::splice::{segments_from_labelled_ids, IGNORE_INDEX};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{load_image, RgbImage};
use tch::{Device, Kind, Tensor};

const QUESTION: &str = "Which is larger, <region> or <region>?";
const REGIONS: [&str; 2] = ["box:2,3,20,18", "poly:22,4,38,6,30,26"];
/// Any tokens of the vocabulary serve as the region numbers.
const NUMBERS: [i64; 3] = [7, 11, 13];
const NEW_TOKENS: usize = 8;
const TOLERANCE: f64 = 1e-5;

fn tiny() -> PathBuf {
    common::root().join("tests/fixtures/rgpt-tiny")
}

/// A copy of the tiny RGPT fixture whose config numbers its regions.
fn numbered_fixture(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-region-path-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["rgpt"]["region_index_tokens"] = serde_json::json!(NUMBERS);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

fn specs() -> Vec<RegionSpec> {
    REGIONS.iter().map(|s| s.parse().unwrap()).collect()
}

fn greedy(generator: &RegionGenerator) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        top_logprobs: 5,
        ..generator.default_config()
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// The greedy answer as `RegionGenerator::complete` (what `rgpt generate`
/// calls) gives it.
fn generate(generator: &RegionGenerator, image: &RgbImage) -> Completion {
    let _guard = tch::no_grad_guard();
    generator
        .complete(
            QUESTION,
            image,
            &specs(),
            generator.model.template(),
            &greedy(generator),
            &mut |_| {},
        )
        .unwrap()
}

/// Every step's top log-probs agree (same ids, values within TOLERANCE).
fn assert_same_logprobs(a: &Completion, b: &Completion, what: &str) {
    assert_eq!(a.output.token_ids, b.output.token_ids, "{what}: tokens");
    for (step, (x, y)) in a
        .output
        .top_logprobs
        .iter()
        .zip(&b.output.top_logprobs)
        .enumerate()
    {
        for (p, q) in x.iter().zip(y) {
            assert_eq!(p.id, q.id, "{what}: step {step}");
            let diff = f64::from((p.logprob - q.logprob).abs());
            assert!(
                diff < TOLERANCE,
                "{what}: step {step} log-probs differ by {diff}"
            );
        }
    }
}

#[test]
fn numbered_regions_are_the_same_through_every_caller() {
    let _guard = tch::no_grad_guard();
    let dir = numbered_fixture("callers");
    let generator = RegionGenerator::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let image = load_image(dir.join("image.png")).unwrap();
    let answer = generate(&generator, &image);

    // The numbers matter on this fixture, so a caller that skipped them
    // would be caught below: the un-numbered model's first step differs.
    let plain = RegionGenerator::load(&tiny(), Device::Cpu, Kind::Float).unwrap();
    let unnumbered = generate(&plain, &image);
    let moved = answer.output.top_logprobs[0]
        .iter()
        .zip(&unnumbered.output.top_logprobs[0])
        .any(|(p, q)| p.id != q.id || (p.logprob - q.logprob).abs() > 1e-3);
    assert!(
        moved,
        "numbering regions does not change this fixture's answer"
    );

    // Chat: the same embeddings as the batched path evaluation uses, the
    // same answer.
    let mut chat = RegionChat::new(&generator, &image, generator.model.template()).unwrap();
    for spec in specs() {
        chat.add_region(spec).unwrap();
    }
    let processed = generator.preprocessor.preprocess(&image).unwrap();
    let pixel_values = processed.pixel_values.unsqueeze(0);
    let prompt_ids = answer.prompt_ids.clone();
    let regions = specs();
    let (_, batched) = generator
        .model
        .encode_prompt_batch(&[RegionPrompt {
            prompt_ids: &prompt_ids,
            pixel_values: &pixel_values,
            transform: &processed.transform,
            regions: &regions,
        }])
        .unwrap()
        .remove(0);
    let chatted = chat.region_embeddings().unwrap();
    let diff = max_diff(&chatted, &batched);
    assert!(
        diff < TOLERANCE,
        "chat's region embeddings differ by {diff}"
    );
    let chat_answer = chat
        .ask(QUESTION, &greedy(&generator), &mut |_| {})
        .unwrap();
    assert_same_logprobs(&answer, &chat_answer, "chat");

    // The eval runner: the same question as an eval item.
    let item = EvalItem {
        id: "q#0".into(),
        task: "region-path".into(),
        kind: TaskKind::Caption,
        image: Some("image.png".into()),
        width: None,
        height: None,
        history: Vec::new(),
        question: format!("<image>\n{QUESTION}"),
        regions: vec![
            Region::Box([2.0, 3.0, 20.0, 18.0]),
            Region::Polygon(vec![vec![22.0, 4.0, 38.0, 6.0, 30.0, 26.0]]),
        ],
        answer: String::new(),
        references: Vec::new(),
        target: None,
        ground_truth: None,
        size: None,
    };
    let store_path = dir.join("predictions.jsonl");
    let mut store = PredictionStore::open(&store_path).unwrap();
    Evaluator {
        generator: &generator,
        image_root: dir.clone(),
        batch_size: 1,
        max_new_tokens: NEW_TOKENS,
        template: generator.model.template(),
    }
    .answer(std::slice::from_ref(&item), &[], &mut store, &mut |_, _| {})
    .unwrap();
    assert_eq!(store.get("q#0").unwrap().answer, answer.text.trim());

    // The training forward, teacher-forced on the prompt and the generated
    // answer: at every answer position its log-probs are generation's.
    let generated = &answer.output.token_ids;
    let ids: Vec<i64> = prompt_ids.iter().chain(generated).copied().collect();
    let targets: Vec<bool> = (0..ids.len()).map(|k| k >= prompt_ids.len()).collect();
    let image_id = generator.tokenizer.token_to_id("<image>").unwrap();
    let segments = segments_from_labelled_ids(
        &ids,
        &targets,
        image_id,
        generator.region_token_id().unwrap(),
    );
    let output = generator
        .model
        .forward_train(&[TrainingExample {
            segments: &segments,
            image: Some(ExampleImage {
                pixel_values: &processed.pixel_values,
                transform: &processed.transform,
            }),
            regions: &regions,
            region_names: &[],
            region_targets: &[],
        }])
        .unwrap();
    let labels = Vec::<i64>::try_from(output.labels.get(0)).unwrap();
    let first = labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    assert_eq!(&labels[first..], &generated[..], "the answer is the target");
    let logprobs = generator
        .model
        .llava
        .llm
        .logits(&output.hidden)
        .get(0)
        .log_softmax(-1, Kind::Float);
    for (step, top) in answer.output.top_logprobs.iter().enumerate() {
        // The logits at the position before an answer token predict it.
        let position = (first + step - 1) as i64;
        for candidate in top {
            let trained = logprobs.double_value(&[position, candidate.id]);
            let diff = (trained - f64::from(candidate.logprob)).abs();
            assert!(
                diff < TOLERANCE,
                "training step {step}: log-probs differ by {diff}"
            );
        }
    }

    // The binaries: `rgpt generate` and `rgpt chat` print the same answer.
    let model = dir.to_str().unwrap();
    let image_path = dir.join("image.png");
    let image_path = image_path.to_str().unwrap();
    let out = common::rgpt(&[
        "generate",
        "--model",
        model,
        "--image",
        image_path,
        "--region",
        REGIONS[0],
        "--region",
        REGIONS[1],
        "--prompt",
        QUESTION,
        "--max-new-tokens",
        &NEW_TOKENS.to_string(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&common::ok(&out)).unwrap();
    let ids: Vec<i64> = report["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids, answer.output.token_ids, "rgpt generate");
    let printed = chat_stdout(
        &dir,
        &format!(
            "/region {}\n/region {}\n{QUESTION}\n/quit\n",
            REGIONS[0], REGIONS[1]
        ),
    );
    assert!(
        printed.lines().any(|line| line == answer.text.trim_end()),
        "rgpt chat printed {printed:?}, expected the line {:?}",
        answer.text
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Over two turns, regions are numbered within the whole conversation, as
/// one generation over it numbers them; a checkpoint numbering 3 regions
/// refuses a 4th when it is added.
#[test]
fn chat_numbers_regions_across_turns_and_refuses_more_than_it_numbers() {
    let _guard = tch::no_grad_guard();
    let dir = numbered_fixture("turns");
    let generator = RegionGenerator::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let image = load_image(dir.join("image.png")).unwrap();
    let config = greedy(&generator);
    let regions = specs();
    let mut chat = RegionChat::new(&generator, &image, generator.model.template()).unwrap();
    chat.add_region(regions[0].clone()).unwrap();
    let first = chat.ask("What is <region>?", &config, &mut |_| {}).unwrap();
    chat.add_region(regions[1].clone()).unwrap();
    let second = chat.ask("And <region>?", &config, &mut |_| {}).unwrap();

    let mut conversation = Conversation::new(generator.model.template());
    conversation.push(Role::User, Some("<image>\nWhat is <region>?".into()));
    conversation.push(Role::Assistant, Some(first.text.clone()));
    conversation.push(Role::User, Some("And <region>?".into()));
    conversation.push(Role::Assistant, None);
    let ids = generator
        .tokenizer
        .encode(&conversation.prompt(), true)
        .unwrap();
    assert_eq!(ids, second.prompt_ids);
    let processed = generator.preprocessor.preprocess(&image).unwrap();
    let pixel_values = processed.pixel_values.unsqueeze(0);
    let one_shot = generator
        .model
        .generate(
            &RegionPrompt {
                prompt_ids: &ids,
                pixel_values: &pixel_values,
                transform: &processed.transform,
                regions: &regions,
            },
            generator.region_token_id().unwrap(),
            &config,
            None,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(one_shot.sequences[0].token_ids, second.output.token_ids);

    chat.add_region(regions[0].clone()).unwrap();
    let err = chat.add_region(regions[1].clone()).unwrap_err().to_string();
    assert!(
        err.contains("4 regions") && err.contains("numbers only 3"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What `rgpt chat` prints with `script` on its stdin.
fn chat_stdout(model: &Path, script: &str) -> String {
    let out = common::chat(
        model,
        &["--max-new-tokens", &NEW_TOKENS.to_string()],
        script,
    );
    common::ok(&out)
}

//! The training forward on the tiny RGPT fixture: labels mark the answers
//! only (token by token on a two-turn, two-region conversation), the loss
//! is the cross-entropy of exactly those tokens, padding in a batch changes
//! nothing, the training logits agree with what generation sees, and
//! gradients reach the refiner and the connector.
use std::path::PathBuf;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Conversation, Role, Template, Tokenizer};
use rgpt_model::prompt::{conversation_segments, Placeholders};
use rgpt_model::rgpt::{ExampleImage, RegionGpt, RegionPrompt, TrainingExample};
use rgpt_model::splice::{Segment, IGNORE_INDEX};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{load_image, ImageTransform, PreprocessorConfig};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rgpt-tiny")
}

fn image() -> (Tensor, ImageTransform) {
    let config = PreprocessorConfig::from_file(fixture().join("preprocessor_config.json")).unwrap();
    let image = load_image(fixture().join("image.png")).unwrap();
    let processed = config.preprocess(&image).unwrap();
    (processed.pixel_values, processed.transform)
}

fn placeholders(tokenizer: &Tokenizer) -> Placeholders {
    Placeholders {
        image: tokenizer.token_to_id("<image>").unwrap(),
        region: tokenizer.token_to_id("<region>").unwrap(),
    }
}

fn two_turns() -> Conversation {
    let mut conv = Conversation::new(Template::VicunaV1);
    conv.push(Role::User, Some("<image>\nWhat is <region>?".into()));
    conv.push(Role::Assistant, Some("A red circle.".into()));
    conv.push(Role::User, Some("And <region>?".into()));
    conv.push(Role::Assistant, Some("A blue square.".into()));
    conv
}

fn regions() -> Vec<RegionSpec> {
    vec![
        "box:2,3,20,18".parse().unwrap(),
        "poly:22,4,38,6,30,26".parse().unwrap(),
    ]
}

#[test]
fn labels_mark_the_answers_token_by_token() {
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let segments =
        conversation_segments(&tokenizer, &two_turns(), placeholders(&tokenizer)).unwrap();
    let kinds: Vec<&str> = segments
        .iter()
        .map(|s| match s {
            Segment::Text { target: true, .. } => "answer",
            Segment::Text { target: false, .. } => "text",
            Segment::Image => "image",
            Segment::Region => "region",
        })
        .collect();
    assert_eq!(
        kinds,
        ["text", "image", "text", "region", "text", "answer", "text", "region", "text", "answer"]
    );
    let texts: Vec<(String, bool)> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Text { ids, target } => Some((tokenizer.decode(ids, false).unwrap(), *target)),
            _ => None,
        })
        .collect();
    let answers: Vec<&str> = texts
        .iter()
        .filter(|(_, target)| *target)
        .map(|(text, _)| text.trim())
        .collect();
    assert_eq!(answers, ["A red circle.</s>", "A blue square.</s>"]);
    // Every other token is instruction: the system prompt, the roles and
    // the questions, ending each time with "ASSISTANT:".
    let instructions: Vec<&str> = texts
        .iter()
        .filter(|(_, target)| !*target)
        .map(|(text, _)| text.trim())
        .collect();
    assert!(instructions[0].starts_with("<s>"), "{instructions:?}");
    assert!(instructions[0].ends_with("USER:"), "{instructions:?}");
    assert_eq!(instructions[2].trim(), "? ASSISTANT:");
    assert_eq!(instructions[3].trim(), "USER: And");
    assert_eq!(instructions[4].trim(), "? ASSISTANT:");
}

#[test]
fn the_loss_is_the_cross_entropy_of_the_answer_tokens_only() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let segments =
        conversation_segments(&tokenizer, &two_turns(), placeholders(&tokenizer)).unwrap();
    let (pixel_values, transform) = image();
    let regions = regions();
    let example = TrainingExample {
        segments: &segments,
        image: Some(ExampleImage {
            pixel_values: &pixel_values,
            transform: &transform,
        }),
        regions: &regions,
        region_names: &[],
        region_targets: &[],
    };
    let out = model.forward_train(&[example]).unwrap();

    // Labels: the answer ids where the answers sit, IGNORE_INDEX on the 16
    // image tokens, both regions and all instruction text.
    let labels: Vec<i64> = Vec::try_from(out.labels.get(0)).unwrap();
    let mut expected = Vec::new();
    for segment in &segments {
        match segment {
            Segment::Text { ids, target } => {
                expected.extend(
                    ids.iter()
                        .map(|&id| if *target { id } else { IGNORE_INDEX }),
                )
            }
            Segment::Image => expected.extend([IGNORE_INDEX; 16]),
            Segment::Region => expected.push(IGNORE_INDEX),
        }
    }
    assert_eq!(labels, expected);
    let answer_tokens = expected.iter().filter(|&&l| l != IGNORE_INDEX).count() as i64;
    assert_eq!(out.target_tokens, answer_tokens);

    // The loss by hand: -log p(label[t] | ..t-1), averaged over answer tokens.
    let log_probs = model
        .llava
        .llm
        .logits(&out.hidden)
        .get(0)
        .log_softmax(-1, Kind::Float);
    let mut total = 0.0;
    for (t, &label) in labels.iter().enumerate().skip(1) {
        if label != IGNORE_INDEX {
            total -= f64::try_from(log_probs.get(t as i64 - 1).get(label)).unwrap();
        }
    }
    let by_hand = total / answer_tokens as f64;
    let loss = f64::try_from(&out.loss).unwrap();
    assert!(
        (loss - by_hand).abs() < 1e-5,
        "loss {loss} vs by hand {by_hand}"
    );
}

#[test]
fn a_padded_batch_gives_each_example_its_own_loss() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let long = conversation_segments(&tokenizer, &two_turns(), placeholders(&tokenizer)).unwrap();
    let mut conv = Conversation::new(Template::VicunaV1);
    conv.push(Role::User, Some("<image>\n<region>?".into()));
    conv.push(Role::Assistant, Some("Red.".into()));
    let short = conversation_segments(&tokenizer, &conv, placeholders(&tokenizer)).unwrap();
    let mut text_only = Conversation::new(Template::VicunaV1);
    text_only.push(Role::User, Some("Say hi.".into()));
    text_only.push(Role::Assistant, Some("Hi there.".into()));
    let text_only =
        conversation_segments(&tokenizer, &text_only, placeholders(&tokenizer)).unwrap();
    let (pixel_values, transform) = image();
    let two = regions();
    let one = vec!["point:30,10,4".parse::<RegionSpec>().unwrap()];
    let with_image = |segments, regions| TrainingExample {
        segments,
        image: Some(ExampleImage {
            pixel_values: &pixel_values,
            transform: &transform,
        }),
        regions,
        region_names: &[],
        region_targets: &[],
    };
    let examples = [
        with_image(&long, &two),
        with_image(&short, &one),
        TrainingExample {
            segments: &text_only,
            image: None,
            regions: &[],
            region_names: &[],
            region_targets: &[],
        },
    ];
    let batch = model.forward_train(&examples).unwrap();
    let mut weighted = 0.0;
    let mut tokens = 0;
    for example in examples {
        let alone = model.forward_train(&[example]).unwrap();
        weighted += f64::try_from(&alone.loss).unwrap() * alone.target_tokens as f64;
        tokens += alone.target_tokens;
    }
    assert_eq!(batch.target_tokens, tokens);
    let batch_loss = f64::try_from(&batch.loss).unwrap();
    let expected = weighted / tokens as f64;
    assert!(
        (batch_loss - expected).abs() < 1e-5,
        "batch {batch_loss} vs per-example {expected}"
    );
}

#[test]
fn training_logits_agree_with_generation() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let ph = placeholders(&tokenizer);
    let question = Conversation::single_turn(Template::VicunaV1, "<image>\nWhat is <region>?");
    let prompt_ids = tokenizer.encode(&question.prompt(), true).unwrap();
    let segments = conversation_segments(&tokenizer, &question, ph).unwrap();
    let (pixel_values, transform) = image();
    let regions = &regions()[..1];
    let out = model
        .forward_train(&[TrainingExample {
            segments: &segments,
            image: Some(ExampleImage {
                pixel_values: &pixel_values,
                transform: &transform,
            }),
            regions,
            region_names: &[],
            region_targets: &[],
        }])
        .unwrap();
    let last = model
        .llava
        .llm
        .logits(&out.hidden)
        .get(0)
        .get(-1)
        .log_softmax(-1, Kind::Float);

    let batched = pixel_values.unsqueeze(0);
    let config = GenerationConfig {
        max_new_tokens: 1,
        ignore_eos: true,
        top_logprobs: 5,
        ..GenerationConfig::default()
    };
    let generated = model
        .generate(
            &RegionPrompt {
                prompt_ids: &prompt_ids,
                pixel_values: &batched,
                transform: &transform,
                regions,
            },
            ph.region,
            &config,
            None,
            &mut |_, _| {},
        )
        .unwrap();
    for top in &generated.sequences[0].top_logprobs[0] {
        let train = f64::try_from(last.get(top.id)).unwrap();
        assert!(
            (train - f64::from(top.logprob)).abs() < 1e-4,
            "token {}: training {train} vs generation {}",
            top.id,
            top.logprob
        );
    }
}

#[test]
fn gradients_reach_refiner_and_connector_and_steps_lower_the_loss() {
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, mut vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    vs.unfreeze();
    let segments =
        conversation_segments(&tokenizer, &two_turns(), placeholders(&tokenizer)).unwrap();
    let (pixel_values, transform) = image();
    let regions = regions();
    let example = || TrainingExample {
        segments: &segments,
        image: Some(ExampleImage {
            pixel_values: &pixel_values,
            transform: &transform,
        }),
        regions: &regions,
        region_names: &[],
        region_targets: &[],
    };
    let mut optimizer = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let first = model.forward_train(&[example()]).unwrap();
    optimizer.zero_grad();
    first.loss.backward();
    let variables = vs.variables();
    for prefix in [
        "feature_refiner.",
        "multi_modal_projector.",
        "vision_tower.",
        "language_model.",
    ] {
        let norm: f64 = variables
            .iter()
            // The tower's last layer and post-LayerNorm are unused (LLaVA
            // takes layer -2), so their gradients stay undefined.
            .filter(|(name, v)| name.starts_with(prefix) && v.grad().defined())
            .map(|(_, v)| f64::try_from(v.grad().norm()).unwrap())
            .sum();
        assert!(norm > 0.0, "no gradient reached {prefix}*");
    }
    optimizer.step();
    let mut loss = f64::try_from(&first.loss).unwrap();
    let start = loss;
    for _ in 0..4 {
        let out = model.forward_train(&[example()]).unwrap();
        optimizer.zero_grad();
        out.loss.backward();
        optimizer.step();
        loss = f64::try_from(&out.loss).unwrap();
    }
    assert!(loss < start * 0.8, "loss {start} -> {loss}");
}

#[test]
fn a_region_given_by_name_is_read_as_the_mean_of_its_word_embeddings() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let prefix = tokenizer.encode("Is it", true).unwrap();
    let answer = tokenizer.encode(" yes", false).unwrap();
    let names = [
        tokenizer.encode("red circle", false).unwrap(),
        tokenizer.encode("blue", false).unwrap(),
    ];
    assert!(
        names[0].len() >= 2,
        "the name must span tokens to test the mean"
    );
    let segments = [
        Segment::Text {
            ids: prefix.clone(),
            target: false,
        },
        Segment::Region,
        Segment::Region,
        Segment::Text {
            ids: answer.clone(),
            target: true,
        },
    ];
    let out = model
        .forward_train(&[TrainingExample {
            segments: &segments,
            image: None,
            regions: &[],
            region_names: &names,
            region_targets: &[],
        }])
        .unwrap();

    // The same sequence built by hand: each region's word embeddings
    // averaged, between the embedded text.
    let llm = &model.llava.llm;
    let embed = |ids: &[i64]| llm.embed(&Tensor::from_slice(ids));
    let embeds = Tensor::cat(
        &[
            embed(&prefix),
            embed(&names[0]).mean_dim(0, true, None),
            embed(&names[1]),
            embed(&answer),
        ],
        0,
    )
    .unsqueeze(0);
    let mut cache = llm.new_cache(1, embeds.size()[1]);
    let expected = llm.logits(&llm.forward_embeds(&embeds, None, &mut cache).unwrap());
    let diff = f64::try_from((llm.logits(&out.hidden) - expected).abs().max()).unwrap();
    assert!(
        diff < 1e-5,
        "named regions differ from the hand-built mean by {diff}"
    );
    assert_eq!(out.target_tokens, answer.len() as i64);

    // A name per `<region>`: one name short is refused, naming the count.
    let err = model
        .forward_train(&[TrainingExample {
            segments: &segments,
            image: None,
            regions: &[],
            region_names: &names[..1],
            region_targets: &[],
        }])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 <region> placeholder(s) but 1 region(s)"),
        "{err}"
    );
}

#[test]
fn region_alignment_is_each_regions_distance_from_its_names_code() {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let (model, _vs) = RegionGpt::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let segments =
        conversation_segments(&tokenizer, &two_turns(), placeholders(&tokenizer)).unwrap();
    let (pixel_values, transform) = image();
    let regions = regions();
    let names = [
        tokenizer.encode("red circle", false).unwrap(),
        tokenizer.encode("blue square", false).unwrap(),
    ];
    let example = |targets| TrainingExample {
        segments: &segments,
        image: Some(ExampleImage {
            pixel_values: &pixel_values,
            transform: &transform,
        }),
        regions: &regions,
        region_names: &[],
        region_targets: targets,
    };
    let plain = model.forward_train(&[example(&[])]).unwrap();
    assert!(plain.alignment.is_none());
    let aligned = model.forward_train(&[example(&names)]).unwrap();
    let (distance, count) = aligned.alignment.expect("named regions are measured");
    assert_eq!(count, 2);
    // The answers' loss does not change.
    assert!(aligned.loss.equal(&plain.loss));

    // By hand: the connector's output for each region against the mean of
    // its name's word embeddings.
    let prompt =
        Conversation::single_turn(Template::VicunaV1, "<image>\n<region> and <region>?").prompt();
    let ids = tokenizer.encode(&prompt, true).unwrap();
    let (_, embeddings) = model
        .encode_prompt_batch(&[RegionPrompt {
            prompt_ids: &ids,
            pixel_values: &pixel_values,
            transform: &transform,
            regions: &regions,
        }])
        .unwrap()
        .remove(0);
    let llm = &model.llava.llm;
    let codes = Tensor::stack(
        &names
            .iter()
            .map(|ids| llm.embed(&Tensor::from_slice(ids)).mean_dim(0, false, None))
            .collect::<Vec<_>>(),
        0,
    );
    let squared = |t: &Tensor| t.square().sum_dim_intlist(1, false, None);
    let expected = (squared(&(&embeddings - &codes)) / squared(&codes)).mean(Kind::Float);
    let diff = f64::try_from((&distance - &expected).abs()).unwrap();
    assert!(diff < 1e-5, "alignment {distance} against {expected}");
    assert!(f64::try_from(&distance).unwrap() > 0.0);

    // One name per region, or none.
    let err = model
        .forward_train(&[example(&names[..1])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 region targets for 2 regions"), "{err}");
}

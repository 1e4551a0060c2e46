//! `RegionChat`, the session behind `rgpt chat`: the image is encoded once,
//! regions join between questions, and every turn answers exactly as a
//! one-shot generation over the whole conversation so far would.
use std::path::PathBuf;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Conversation, Role, Template};
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_model::rgpt::RegionPrompt;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{load_image, RgbImage};
use tch::{Device, Kind};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rgpt-tiny")
}

fn setup() -> (RegionGenerator, RgbImage, GenerationConfig) {
    let generator = RegionGenerator::load(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let image = load_image(fixture().join("image.png")).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 6,
        ignore_eos: true,
        ..generator.default_config()
    };
    (generator, image, config)
}

/// Greedy tokens of one generation over a whole conversation.
fn one_shot(
    generator: &RegionGenerator,
    image: &RgbImage,
    conversation: &Conversation,
    regions: &[RegionSpec],
    config: &GenerationConfig,
) -> Vec<i64> {
    let ids = generator
        .tokenizer
        .encode(&conversation.prompt(), true)
        .unwrap();
    let processed = generator.preprocessor.preprocess(image).unwrap();
    let pixel_values = processed.pixel_values.unsqueeze(0);
    let region_id = generator.tokenizer.token_to_id("<region>").unwrap();
    let out = generator
        .model
        .generate(
            &RegionPrompt {
                prompt_ids: &ids,
                pixel_values: &pixel_values,
                transform: &processed.transform,
                regions,
            },
            region_id,
            config,
            None,
            &mut |_, _| {},
        )
        .unwrap();
    out.sequences[0].token_ids.clone()
}

#[test]
fn each_turn_answers_as_a_generation_over_the_whole_conversation() {
    let (generator, image, config) = setup();
    let mut chat = RegionChat::new(&generator, &image, Template::VicunaV1).unwrap();
    let first: RegionSpec = "box:2,3,20,18".parse().unwrap();
    let second: RegionSpec = "poly:22,4,38,6,30,26".parse().unwrap();
    assert_eq!(chat.add_region(first.clone()).unwrap(), 0);
    let mut streamed = String::new();
    let a1 = chat
        .ask("What is <region>?", &config, &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(streamed.trim(), a1.text.trim());
    let mut expected = Conversation::new(Template::VicunaV1);
    expected.push(Role::User, Some("<image>\nWhat is <region>?".into()));
    expected.push(Role::Assistant, None);
    assert_eq!(
        a1.output.token_ids,
        one_shot(
            &generator,
            &image,
            &expected,
            std::slice::from_ref(&first),
            &config
        )
    );

    assert_eq!(chat.add_region(second.clone()).unwrap(), 1);
    let a2 = chat.ask("And <region>?", &config, &mut |_| {}).unwrap();
    let mut expected = Conversation::new(Template::VicunaV1);
    expected.push(Role::User, Some("<image>\nWhat is <region>?".into()));
    expected.push(Role::Assistant, Some(a1.text.clone()));
    expected.push(Role::User, Some("And <region>?".into()));
    expected.push(Role::Assistant, None);
    assert_eq!(
        a2.output.token_ids,
        one_shot(&generator, &image, &expected, &[first, second], &config)
    );
    assert_eq!(chat.conversation().turns().len(), 4);
    assert_eq!(chat.pending_regions(), 0);
}

#[test]
fn mistakes_leave_the_conversation_as_it_was() {
    let (generator, image, config) = setup();
    let mut chat = RegionChat::new(&generator, &image, Template::VicunaV1).unwrap();
    // A region outside the image is refused when added, naming its number.
    chat.add_region("box:1,1,9,9".parse().unwrap()).unwrap();
    let err = chat
        .add_region("box:100,100,120,120".parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().starts_with("region 1:"), "{err}");
    assert_eq!(chat.regions().len(), 1);
    // The pending region needs its placeholder.
    let err = chat.ask("What is this?", &config, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("0 <region> placeholder(s) but 1 region(s)"),
        "{err}"
    );
    assert!(chat.conversation().turns().is_empty());
    chat.ask("What is <region>?", &config, &mut |_| {}).unwrap();
    // The image belongs to the first turn only.
    let err = chat
        .ask("<image> again?", &config, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("<image>"), "{err}");
    assert_eq!(chat.conversation().turns().len(), 2);
    // A question without new regions is fine after the first.
    chat.ask("Why?", &config, &mut |_| {}).unwrap();
    assert_eq!(chat.conversation().turns().len(), 4);
    chat.reset();
    assert!(chat.conversation().turns().is_empty());
    assert!(chat.regions().is_empty());
    chat.ask("Describe the image.", &config, &mut |_| {})
        .unwrap();
    assert!(chat.conversation().turns()[0]
        .1
        .as_deref()
        .unwrap()
        .starts_with("<image>\n"));
}

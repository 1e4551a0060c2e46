//! Each checkpoint's prompts become ids the way it was trained with: the
//! original LLaVA layout as LLaVA's `tokenizer_image_token` does, llava-hf
//! and RGPT checkpoints as the processor does.
//!
//! tests/fixtures/llava-original-tiny comes from
//! scripts/fixtures/sentencepiece_slow.py (transformers 4.37.2's slow
//! LlamaTokenizer, sentencepiece 0.2.3): llava-tiny's weights in the
//! original repository's layout (`LlavaLlamaForCausalLM`,
//! `model.mm_projector.*`), a `tokenizer.model` only, and per prompt the ids
//! of `tokenizer_image_token` restated from haotian-liu/LLaVA c121f04
//! `llava/mm_utils.py` (`ids`; `ids_with_region_token` after
//! `add_tokens(["<image>", "<region>"], special_tokens=True)`), and the
//! whole-prompt ids of the processor's way (`whole_prompt_ids`).
use std::path::{Path, PathBuf};

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Conversation, Template, Tokenizer};
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_model::llava::Llava;
use rgpt_model::prompt_ids::{prompt_ids, PromptTokenization};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::load_image;
use serde::Deserialize;
use tch::{Device, Kind};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn original() -> PathBuf {
    fixtures().join("llava-original-tiny")
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<i64>,
    ids_with_region_token: Vec<i64>,
    whole_prompt_ids: Vec<i64>,
}

#[derive(Deserialize)]
struct Expected {
    llava_commit: String,
    image_token_index: i64,
    region_token_id: i64,
    cases: Vec<Case>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(original().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of `from` in a fresh scratch directory, `config.json` edited.
fn copy_checkpoint(from: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-prompt-ids-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn original_layout_llava_is_prompted_as_tokenizer_image_token() {
    let expected = expected();
    assert!(expected.llava_commit.starts_with("c121f04"));
    let how = PromptTokenization::for_checkpoint(&original()).unwrap();
    assert_eq!(how, PromptTokenization::TokenizerImageToken);
    let mut tokenizer = Tokenizer::from_dir(&original()).unwrap();
    assert!(
        tokenizer.slow().is_some(),
        "tokenizer.model only: the slow tokenizer"
    );
    let image = expected.image_token_index;
    for case in &expected.cases {
        let ids = prompt_ids(&tokenizer, &case.prompt, how, image).unwrap();
        assert_eq!(ids, case.ids, "{:?}", case.prompt);
    }
    let added = tokenizer
        .add_special_tokens(&["<image>", "<region>"])
        .unwrap();
    assert_eq!(added[1], expected.region_token_id);
    for case in &expected.cases {
        let ids = prompt_ids(&tokenizer, &case.prompt, how, image).unwrap();
        assert_eq!(ids, case.ids_with_region_token, "{:?}", case.prompt);
        let whole = prompt_ids(
            &tokenizer,
            &case.prompt,
            PromptTokenization::Processor,
            added[0],
        );
        assert_eq!(whole.unwrap(), case.whole_prompt_ids, "{:?}", case.prompt);
    }
    // The difference the issue names: after the image, LLaVA's text starts
    // with its own `▁`, the processor's does not.
    let lone = tokenizer.token_to_id("▁").unwrap();
    let first = &expected.cases[0];
    let after = first.ids.iter().position(|&id| id == image).unwrap() + 1;
    assert_eq!(first.ids[after], lone);
    let after = first
        .whole_prompt_ids
        .iter()
        .position(|&id| id == added[0])
        .unwrap()
        + 1;
    assert_ne!(first.whole_prompt_ids[after], lone);
}

/// llava-hf and RGPT checkpoints keep the processor's way, and their
/// existing parity (llava_parity.rs) with it.
#[test]
fn llava_hf_and_rgpt_checkpoints_use_the_processor() {
    for name in ["llava-tiny", "llava-siglip-tiny", "rgpt-tiny"] {
        let dir = fixtures().join(name);
        assert_eq!(
            PromptTokenization::for_checkpoint(&dir).unwrap(),
            PromptTokenization::Processor,
            "{name}"
        );
    }
    let dir = fixtures().join("llava-tiny");
    let llava_hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let ids = prompt_ids(
        &tokenizer,
        llava_hf["prompt"].as_str().unwrap(),
        PromptTokenization::Processor,
        800,
    )
    .unwrap();
    let want: Vec<i64> = serde_json::from_value(llava_hf["prompt_ids"].clone()).unwrap();
    assert_eq!(ids, want);
}

/// `prompt_tokenization` in config.json overrides the detection; without
/// `architectures`, the weights' layout decides.
#[test]
fn the_config_overrides_and_the_layout_decides_when_it_is_silent() {
    let dir = copy_checkpoint(&original(), "override", |c| {
        c["prompt_tokenization"] = "processor".into();
    });
    assert_eq!(
        PromptTokenization::for_checkpoint(&dir).unwrap(),
        PromptTokenization::Processor
    );
    let _ = std::fs::remove_dir_all(&dir);

    let dir = copy_checkpoint(&fixtures().join("llava-tiny"), "override-hf", |c| {
        c["prompt_tokenization"] = "tokenizer_image_token".into();
    });
    assert_eq!(
        PromptTokenization::for_checkpoint(&dir).unwrap(),
        PromptTokenization::TokenizerImageToken
    );
    let _ = std::fs::remove_dir_all(&dir);

    let dir = copy_checkpoint(&original(), "bad", |c| {
        c["prompt_tokenization"] = "llava".into();
    });
    let err = PromptTokenization::for_checkpoint(&dir)
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.contains("prompt_tokenization") && err.contains("tokenizer_image_token"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");

    let dir = copy_checkpoint(&original(), "layout", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("architectures");
        c.remove("model_type");
    });
    assert_eq!(
        PromptTokenization::for_checkpoint(&dir).unwrap(),
        PromptTokenization::TokenizerImageToken
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The original layout loads as the same model as llava-tiny: the same
/// greedy tokens for the same prompt (its image id -200 there, 800 here).
#[test]
fn original_layout_loads_the_same_model() {
    let expected = expected();
    let pixels =
        rgpt_weights::Checkpoint::open(fixtures().join("llava-tiny/pixel_values.safetensors"))
            .unwrap()
            .tensor("pixel_values")
            .unwrap();
    let config = GenerationConfig {
        max_new_tokens: 6,
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let run = |dir: &Path, ids: &[i64]| {
        let (model, _vs) = Llava::from_pretrained(dir, Device::Cpu, Kind::Float).unwrap();
        let out = model
            .generate(ids, &pixels, &config, None, &mut |_, _| {})
            .unwrap();
        out.sequences[0].token_ids.clone()
    };
    let ids = &expected.cases[0].ids;
    let hf_ids: Vec<i64> = ids
        .iter()
        .map(|&id| {
            if id == expected.image_token_index {
                800
            } else {
                id
            }
        })
        .collect();
    assert_eq!(
        run(&original(), ids),
        run(&fixtures().join("llava-tiny"), &hf_ids)
    );
}

/// `rgpt chat` and `rgpt generate` (RegionChat, through
/// `RegionGenerator::prompt_ids`) prompt an original-layout checkpoint as
/// `tokenizer_image_token` does, `<region>` included.
#[test]
fn region_chat_prompts_an_original_checkpoint_the_llava_way() {
    let expected = expected();
    // The checkpoint with RGPT's placeholders added to its slow tokenizer,
    // saved as transformers saves them (added_tokens.json).
    let dir = copy_checkpoint(&original(), "chat", |_| {});
    std::fs::write(
        dir.join("added_tokens.json"),
        r#"{"<image>": 800, "<region>": 801}"#,
    )
    .unwrap();
    let generator = RegionGenerator::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        generator.prompt_tokenization,
        PromptTokenization::TokenizerImageToken
    );
    let case = &expected.cases[1];
    let question = "What is <region> doing?";
    let rendered =
        Conversation::single_turn(Template::VicunaV1, &format!("<image>\n{question}")).prompt();
    assert_eq!(rendered, case.prompt);
    assert_eq!(
        generator.prompt_ids(&rendered).unwrap(),
        case.ids_with_region_token
    );

    let image = load_image(fixtures().join("llava-tiny/image.png")).unwrap();
    let mut chat = RegionChat::new(&generator, &image, Template::VicunaV1).unwrap();
    chat.add_region(RegionSpec::from_xyxy(2.0, 3.0, 30.0, 20.0))
        .unwrap();
    let config = GenerationConfig {
        max_new_tokens: 3,
        ignore_eos: true,
        ..generator.default_config()
    };
    let completion = chat.ask(question, &config, &mut |_| {}).unwrap();
    assert_eq!(completion.prompt_ids, case.ids_with_region_token);
}

/// LLaVA loads its checkpoints' tokenizer with `use_fast=False`: an
/// original-layout checkpoint that also ships a `tokenizer.json` is still
/// tokenized by its `tokenizer.model`, the slow way.
#[test]
fn an_original_checkpoint_is_tokenized_slow_beside_a_tokenizer_json() {
    let expected = expected();
    let dir = copy_checkpoint(&original(), "both-tokenizers", |_| {});
    rgpt_llm::sentencepiece::tokenizer_from_sentencepiece(&dir.join("tokenizer.model"))
        .unwrap()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    let how = PromptTokenization::for_checkpoint(&dir).unwrap();
    let fast = Tokenizer::from_dir(&dir).unwrap();
    let slow = how.tokenizer(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(fast.slow().is_none() && slow.slow().is_some());
    let case = &expected.cases[8];
    let ids = prompt_ids(&slow, &case.prompt, how, expected.image_token_index).unwrap();
    assert_eq!(ids, case.ids, "{:?}", case.prompt);
    let fast_ids = prompt_ids(&fast, &case.prompt, how, expected.image_token_index).unwrap();
    assert_ne!(
        fast_ids, case.ids,
        "the fast tokenizer should differ on {:?}",
        case.prompt
    );
}

/// Training an original-layout checkpoint reads its conversations the same
/// way: `conversation_segments_with` gives `tokenizer_image_token`'s ids,
/// and the answer tokens (their `</s>` included) are the targets.
#[test]
fn training_segments_follow_tokenizer_image_token() {
    use rgpt_llm::Role;
    use rgpt_model::prompt::{conversation_segments_with, Placeholders};
    use rgpt_model::splice::Segment;

    let expected = expected();
    let mut tokenizer = Tokenizer::from_dir(&original()).unwrap();
    let added = tokenizer
        .add_special_tokens(&["<image>", "<region>"])
        .unwrap();
    let placeholders = Placeholders {
        image: expected.image_token_index,
        region: added[1],
    };
    let mut conversation = Conversation::new(Template::VicunaV1);
    conversation.push(
        Role::User,
        Some("<image>\nDescribe <region> and <region>.".into()),
    );
    conversation.push(Role::Assistant, Some("A dog and a  cat.".into()));
    conversation.push(Role::User, Some("Which is left?".into()));
    conversation.push(Role::Assistant, None);
    // The fixture's third prompt is this conversation, rendered.
    let case = &expected.cases[2];
    assert_eq!(conversation.prompt(), case.prompt);

    let segments = conversation_segments_with(
        &tokenizer,
        &conversation,
        placeholders,
        PromptTokenization::TokenizerImageToken,
    )
    .unwrap();
    let flat: Vec<i64> = segments
        .iter()
        .flat_map(|s| match s {
            Segment::Text { ids, .. } => ids.clone(),
            Segment::Image => vec![placeholders.image],
            Segment::Region => vec![placeholders.region],
        })
        .collect();
    assert_eq!(flat, case.ids_with_region_token);
    let targets: Vec<String> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Text { ids, target: true } => Some(tokenizer.decode(ids, false).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["A dog and a  cat.</s>"]);
}

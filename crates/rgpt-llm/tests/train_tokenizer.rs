//! A BPE tokenizer trained on a small corpus: LLaMA's special ids, BOS on
//! every encoding, words of the corpus as single tokens, exact round trips.
use rgpt_llm::Tokenizer;

/// A tokenizer of at most 300 tokens trained on `corpus` repeated 50 times.
fn train_on(corpus: &[&str], split_punctuation: bool) -> Tokenizer {
    let texts = corpus.iter().cycle().take(200).map(|s| s.to_string());
    Tokenizer::train_bpe(texts, 300, split_punctuation).unwrap()
}

#[test]
fn a_trained_tokenizer_round_trips_its_corpus() {
    let corpus = [
        "A small red circle in the top left of the image, to the left of a large blue square.",
        "What colour is <region>? Answer the question using colour names.",
        "Region [2].",
        "No corresponding options found.",
    ];
    let tokenizer = train_on(&corpus, false);
    assert_eq!(tokenizer.token_to_id("<unk>"), Some(0));
    assert_eq!(tokenizer.token_to_id("<s>"), Some(1));
    assert_eq!(tokenizer.token_to_id("</s>"), Some(2));
    assert!(tokenizer.vocab_size() <= 300);
    for text in corpus {
        let ids = tokenizer.encode(text, true).unwrap();
        assert_eq!(ids[0], 1, "BOS first");
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), text);
    }
    // Frequent words are single tokens: prompts stay short.
    let ids = tokenizer.encode("circle square", false).unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let dir = std::env::temp_dir().join(format!("rgpt-trained-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    tokenizer.save(&dir.join("tokenizer.json")).unwrap();
    let reloaded = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        reloaded.encode(corpus[0], true).unwrap(),
        tokenizer.encode(corpus[0], true).unwrap()
    );
}

#[test]
fn split_punctuation_keeps_quoted_words_the_tokens_of_bare_ones() {
    let corpus = [
        "From the provided masks denoted by <region> and <region>, which one fits \"the red circle\"?",
        "Which region fits \"the circle\"? Answer the question using the template Region [x].",
        "What shape is <region>? A red circle.",
        "Region [2].",
    ];
    let circle = |tokenizer: &Tokenizer, text: &str| -> Vec<String> {
        let ids = tokenizer.encode(text, false).unwrap();
        ids.iter()
            .map(|&id| tokenizer.inner().id_to_token(id as u32).unwrap())
            .filter(|t| t.contains("circle"))
            .collect()
    };
    let glued = train_on(&corpus, false);
    assert_ne!(
        circle(&glued, corpus[1]),
        circle(&glued, corpus[2]),
        "without the split a small vocabulary glues the quote to the word"
    );
    let split = train_on(&corpus, true);
    for text in corpus {
        let ids = split.encode(text, true).unwrap();
        assert_eq!(split.decode(&ids, true).unwrap(), text);
    }
    assert_eq!(circle(&split, corpus[0]), ["\u{2581}circle"]);
    assert_eq!(circle(&split, corpus[1]), ["\u{2581}circle"]);
    assert_eq!(circle(&split, corpus[2]), ["\u{2581}circle"]);
}

#[test]
fn a_word_level_tokenizer_holds_the_corpus_words_and_no_lone_word_mark() {
    let corpus = [
        "USER: <image>\nFrom the provided masks denoted by <region> <region> and <region>, which one fits \"the red circle\"? ASSISTANT: Region [2].</s>",
        "USER: What shape is <region>? ASSISTANT: A red circle.</s>",
        "USER: Which region fits \"the blue square\"? ASSISTANT: No corresponding options found.</s>",
    ];
    let tokenizer = Tokenizer::train_word_level(corpus.iter(), &["<image>", "<region>"]).unwrap();
    assert_eq!(tokenizer.token_to_id("<unk>"), Some(0));
    assert_eq!(tokenizer.token_to_id("<s>"), Some(1));
    assert_eq!(tokenizer.token_to_id("</s>"), Some(2));
    let tokens = |text: &str| -> Vec<String> {
        let ids = tokenizer.encode(text, true).unwrap();
        ids.iter()
            .map(|&id| tokenizer.inner().id_to_token(id as u32).unwrap())
            .collect()
    };
    let first = tokens(corpus[0]);
    assert_eq!(first[0], "<s>");
    assert!(!first.contains(&"\u{2581}".to_string()), "{first:?}");
    assert!(!first.contains(&"<unk>".to_string()), "{first:?}");
    // Quoted words are the bare words' tokens; the space before a quote or
    // a bracket stays on the mark.
    for piece in [
        "\u{2581}\"",
        "the",
        "\u{2581}red",
        "\u{2581}circle",
        "\"",
        "?",
    ] {
        assert!(first.contains(&piece.to_string()), "{piece} in {first:?}");
    }
    for piece in ["\u{2581}Region", "\u{2581}[", "2", "]", "."] {
        assert!(first.contains(&piece.to_string()), "{piece} in {first:?}");
    }
    // The placeholders swallow the space before them: three candidates,
    // side by side.
    let region = tokenizer.token_to_id("<region>").unwrap();
    let ids = tokenizer.encode(corpus[0], true).unwrap();
    let at: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == region).collect();
    assert_eq!(at.len(), 3);
    assert_eq!(at[1], at[0] + 1, "{first:?}");
    // The vocabulary is the corpus's words and marks, no merges.
    assert!(tokenizer.vocab_size() < 60, "{}", tokenizer.vocab_size());
    // Answers round-trip.
    for text in [
        "Region [2].",
        "A red circle.",
        "No corresponding options found.",
    ] {
        let ids = tokenizer.encode(text, true).unwrap();
        assert!(!ids.contains(&0), "{text}");
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), text);
    }
    // The question after `<image>` starts with the word-marked `▁From`, as
    // it does without the image.
    assert_eq!(first[3..5], ["<image>", "\u{2581}From"], "{first:?}");
    let bare = tokens("USER: From the provided masks");
    assert_eq!(bare[3], "\u{2581}From", "{bare:?}");
    // A word outside the corpus is `<unk>`, not an error.
    let unknown = tokenizer.encode("a purple hexagon", false).unwrap();
    assert!(unknown.contains(&0), "{unknown:?}");
}

//! Caption metrics against pycocoevalcap 1.2, on fixtures made by
//! `scripts/fixtures/caption_metrics.py` (its PTBTokenizer, i.e. Stanford
//! CoreNLP 3.4.1, and its Bleu(4), Meteor(), Rouge(), Cider() scorers, run
//! with OpenJDK 17).
//!
//! Tolerances: BLEU, ROUGE-L and CIDEr are the same float64 formulas, so
//! they agree to rounding (1e-6 is generous; differences come only from
//! summation order). METEOR is the same jar fed the same lines; 1e-4 allows
//! for a different JVM. Tokenization must match exactly.
//!
//! The METEOR and live-tokenizer tests need Java and pycocoevalcap's jars,
//! which `scripts/setup.sh` installs into `.venv`; they fail (never skip)
//! when those are missing.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rgpt_eval::caption::{
    jar_in_venv, score_captions, tokenize, Bleu, Candidates, Cider, JavaPtbTokenizer, Meteor,
    MeteorSource, PtbTokenizer, ReferenceJar, References, RougeL, ScoreOptions,
};
use rgpt_eval::EvalError;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    refs: BTreeMap<String, Vec<String>>,
    preds: BTreeMap<String, String>,
    tokenized: Tokenized,
    corpus: BTreeMap<String, f64>,
    per_image: BTreeMap<String, BTreeMap<String, f64>>,
    tokenizer_cases: TokenizerCases,
}

#[derive(Deserialize)]
struct Tokenized {
    refs: References,
    preds: Candidates,
}

#[derive(Deserialize)]
struct TokenizerCases {
    captions: Vec<String>,
    tokenized: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> Fixture {
    let path = root().join("tests/fixtures/caption_metrics/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The jar from its environment variable or the workspace's `.venv`.
fn reference_jar(which: ReferenceJar) -> PathBuf {
    if let Some(path) = std::env::var_os(which.env_var()) {
        return PathBuf::from(path);
    }
    let venv = root().join(".venv");
    jar_in_venv(&venv, which).unwrap_or_else(|| {
        panic!(
            "{} not found under {}: run scripts/setup.sh (it installs pycocoevalcap==1.2 into .venv) \
             or set {}",
            which.file_name(),
            venv.display(),
            which.env_var()
        )
    })
}

fn assert_close(name: &str, id: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{name} of {id}: got {got}, pycocoevalcap {want} (tolerance {tol})"
    );
}

const BLEU: [&str; 4] = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"];

#[test]
fn bleu_rouge_cider_match_pycocoevalcap_on_its_tokenization() {
    let f = fixture();
    let (refs, cands) = (&f.tokenized.refs, &f.tokenized.preds);
    let bleu = Bleu::compute(refs, cands).expect("valid fixture");
    let rouge = RougeL::compute(refs, cands).expect("valid fixture");
    let cider = Cider::compute(refs, cands).expect("valid fixture");
    for (k, name) in BLEU.iter().enumerate() {
        assert_close(name, "corpus", bleu.corpus[k], f.corpus[*name], 1e-6);
    }
    assert_close("ROUGE-L", "corpus", rouge.corpus, f.corpus["ROUGE-L"], 1e-6);
    assert_close("CIDEr", "corpus", cider.corpus, f.corpus["CIDEr"], 1e-6);
    assert_eq!(bleu.per_image.len(), f.per_image.len());
    for (id, want) in &f.per_image {
        for (k, name) in BLEU.iter().enumerate() {
            assert_close(name, id, bleu.per_image[id][k], want[*name], 1e-6);
        }
        assert_close("ROUGE-L", id, rouge.per_image[id], want["ROUGE-L"], 1e-6);
        assert_close("CIDEr", id, cider.per_image[id], want["CIDEr"], 1e-6);
    }
}

#[test]
fn native_tokenizer_equals_java_on_every_fixture_caption() {
    let f = fixture();
    // The same calls as COCOEvalCap: all references together, then all
    // predictions, each in id order.
    assert_eq!(tokenize(&f.refs), f.tokenized.refs);
    let pred_lists: References = f
        .preds
        .iter()
        .map(|(id, p)| (id.clone(), vec![p.clone()]))
        .collect();
    let preds: Candidates = tokenize(&pred_lists)
        .into_iter()
        .map(|(id, mut v)| (id, v.remove(0)))
        .collect();
    for (id, want) in &f.tokenized.preds {
        assert_eq!(&preds[id], want, "prediction {id}: {:?}", f.preds[id]);
    }
    let cases: Vec<&str> = f
        .tokenizer_cases
        .captions
        .iter()
        .map(String::as_str)
        .collect();
    let got = PtbTokenizer::new().tokenize_lines(&cases);
    for ((caption, got), want) in cases.iter().zip(&got).zip(&f.tokenizer_cases.tokenized) {
        assert_eq!(got, want, "tokenizing {caption:?}");
    }
}

#[test]
fn score_captions_from_raw_text_matches_pycocoevalcap() {
    let f = fixture();
    let options = ScoreOptions {
        allow_missing: false,
        meteor: MeteorSource::Off,
    };
    let report = score_captions(&f.preds, &f.refs, &options).expect("valid fixture");
    let s = report.scores;
    for (k, name) in BLEU.iter().enumerate() {
        assert_close(name, "corpus", s.bleu[k], f.corpus[*name], 1e-6);
    }
    assert_close("ROUGE-L", "corpus", s.rouge_l, f.corpus["ROUGE-L"], 1e-6);
    assert_close("CIDEr", "corpus", s.cider, f.corpus["CIDEr"], 1e-6);
    assert_eq!(s.meteor, None);
    assert!(report.meteor_unavailable.is_some());
    assert!(report.missing.is_empty());
    assert_eq!(report.per_image.len(), f.per_image.len());
}

#[test]
fn meteor_matches_pycocoevalcap_through_the_jar() {
    let f = fixture();
    let jar = reference_jar(ReferenceJar::Meteor);
    // One JVM for everything: end to end from raw captions, METEOR included.
    let options = ScoreOptions {
        allow_missing: false,
        meteor: MeteorSource::Jar(jar),
    };
    let report = score_captions(&f.preds, &f.refs, &options).expect("METEOR runs");
    let meteor = report.scores.meteor.expect("METEOR computed");
    assert_close("METEOR", "corpus", meteor, f.corpus["METEOR"], 1e-4);
    for (id, want) in &f.per_image {
        let got = report.per_image[id].meteor.expect("per-image METEOR");
        assert_close("METEOR", id, got, want["METEOR"], 1e-4);
    }
    let json = serde_json::to_value(report.scores).expect("serializable");
    assert_close(
        "METEOR",
        "json",
        json["METEOR"].as_f64().expect("a number"),
        f.corpus["METEOR"],
        1e-4,
    );
}

#[test]
fn java_tokenizer_run_live_agrees_with_native() {
    let f = fixture();
    let java = JavaPtbTokenizer::new(reference_jar(ReferenceJar::CoreNlp)).expect("jar exists");
    let mut captions: Vec<&str> = f.refs.values().flatten().map(String::as_str).collect();
    captions.extend(f.tokenizer_cases.captions.iter().map(String::as_str));
    // Line breaks other than \n, which ptbtokenizer.py would let shift lines.
    captions.push("a dog\ron a\u{2028}bed");
    let native = PtbTokenizer::new();
    assert_eq!(
        java.raw_lines(&captions).expect("java runs"),
        native.raw_lines(&captions)
    );
}

#[test]
fn meteor_errors_name_the_missing_jar_or_java() {
    let missing = Path::new("/nonexistent/meteor-1.5.jar");
    assert!(matches!(Meteor::spawn(missing), Err(EvalError::JarMissing { jar }) if jar == missing));

    let dir = std::env::temp_dir().join(format!("rgpt-eval-meteor-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bogus = dir.join("meteor-1.5.jar");
    std::fs::write(&bogus, b"not a jar").expect("write");
    let no_java = Meteor::spawn_with_java(&bogus, Path::new("/nonexistent/bin/java"));
    assert!(
        matches!(no_java, Err(EvalError::JavaSpawn { .. })),
        "{:?}",
        no_java.err()
    );

    // Java starts but cannot run the jar: the error carries java's stderr.
    let refs: References = [("1".to_string(), vec!["a dog".to_string()])].into();
    let cands: Candidates = [("1".to_string(), "a dog".to_string())].into();
    let err = Meteor::spawn(&bogus)
        .and_then(|mut m| m.compute(&refs, &cands))
        .expect_err("bogus jar");
    match &err {
        EvalError::MeteorProtocol { stderr, .. } => {
            assert!(stderr.to_lowercase().contains("jar"), "stderr: {stderr}")
        }
        other => panic!("expected MeteorProtocol, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! POPE object-hallucination scores (paper Table 8), exactly as POPE's
//! `evaluate.py` (RUCAIBox/POPE; the copy LLaVA ships as
//! `eval/eval_pope.py`) reads an answer: keep the text before the first
//! `.`, drop commas, split on single spaces, and answer "no" when a word is
//! `No`, `not` or `no`, "yes" otherwise. "yes" is the positive class.
//!
//! Where the script divides by zero (no positive prediction, or no positive
//! label) it crashes; here that ratio is 0 and the counts are reported.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// The script's reading of a free-form answer.
pub fn answer_is_yes(text: &str) -> bool {
    let first = match text.find('.') {
        Some(dot) => &text[..dot],
        None => text,
    };
    let words = first.replace(',', "");
    !words
        .split(' ')
        .any(|w| w == "No" || w == "not" || w == "no")
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PopeScores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub yes_ratio: f64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Scores `(predicted yes, labelled yes)` pairs.
pub fn pope_scores(pairs: impl IntoIterator<Item = (bool, bool)>) -> PopeScores {
    let (mut tp, mut fp, mut tn, mut fn_) = (0u64, 0u64, 0u64, 0u64);
    for (predicted, label) in pairs {
        match (predicted, label) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    PopeScores {
        accuracy: ratio(tp + tn, tp + tn + fp + fn_),
        precision,
        recall,
        f1,
        yes_ratio: ratio(tp + fp, tp + tn + fp + fn_),
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fn_,
    }
}

/// One line of an answers file (POPE's and LLaVA's `answers.jsonl`; other
/// fields are ignored).
#[derive(Deserialize)]
struct AnswerLine {
    question_id: u64,
    text: String,
}

/// Reads an answers file: JSON lines `{"question_id": ID, "text": ANSWER}`,
/// blank lines skipped; a later answer to the same question wins.
pub fn read_answers(path: &Path) -> Result<BTreeMap<u64, String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut answers = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let answer: AnswerLine = serde_json::from_str(line).map_err(|e| EvalError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("malformed answer: {e}"),
        })?;
        answers.insert(answer.question_id, answer.text);
    }
    Ok(answers)
}

/// Scores the answers read from `path` against `(question id, labelled
/// yes)` questions; every question must have an answer.
pub fn score_answers(
    questions: &[(u64, bool)],
    answers: &BTreeMap<u64, String>,
    path: &Path,
) -> Result<PopeScores, EvalError> {
    let missing: Vec<u64> = questions
        .iter()
        .map(|&(id, _)| id)
        .filter(|id| !answers.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(EvalError::MissingAnswers {
            path: path.to_path_buf(),
            count: missing.len(),
            first: missing.into_iter().take(5).collect(),
        });
    }
    Ok(pope_scores(
        questions
            .iter()
            .map(|&(id, label)| (answer_is_yes(&answers[&id]), label)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tag: &str, text: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("rgpt-eval-pope-{tag}-{}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn answers_are_read_by_question_and_scored_by_the_scripts_rule() {
        let path = file(
            "ok",
            "{\"question_id\": 1, \"text\": \"Yes, there is.\", \"model\": \"x\"}\n\n\
             {\"question_id\": 2, \"text\": \"No.\"}\n\
             {\"question_id\": 3, \"text\": \"There is not a dog.\"}\n",
        );
        let answers = read_answers(&path).unwrap();
        assert_eq!(answers.len(), 3);
        // Labels yes, yes, no: one true positive, one false negative, one
        // true negative.
        let scores = score_answers(&[(1, true), (2, true), (3, false)], &answers, &path).unwrap();
        assert_eq!(
            (
                scores.true_positives,
                scores.false_negatives,
                scores.true_negatives
            ),
            (1, 1, 1)
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_malformed_line_and_a_missing_answer_are_named() {
        let path = file(
            "bad",
            "{\"question_id\": 1, \"text\": \"yes\"}\n{\"id\": 2}\n",
        );
        let err = read_answers(&path).unwrap_err().to_string();
        assert!(err.contains(":2: malformed answer"), "{err}");
        std::fs::write(&path, "{\"question_id\": 1, \"text\": \"yes\"}\n").unwrap();
        let answers = read_answers(&path).unwrap();
        let err = score_answers(&[(1, true), (7, false), (9, true)], &answers, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("2 question(s) have no answer") && err.contains("[7, 9]"),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);
    }
}

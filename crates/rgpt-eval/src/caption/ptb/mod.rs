//! PTB tokenisation as pycocoevalcap 1.2 does it before scoring captions:
//! `tokenizer/ptbtokenizer.py` runs Stanford CoreNLP 3.4.1's `PTBTokenizer`
//! with `-preserveLines -lowerCase`, then drops every token found in its
//! `PUNCTUATIONS` list.
//!
//! [`PtbTokenizer`] is a native reimplementation of that lexer (its rule
//! table is in the private `rules` module); [`JavaPtbTokenizer`] runs the real
//! jar the way ptbtokenizer.py does, for checking the native one. The two
//! agree on every fixture caption, on some 100k random caption-like lines and
//! on every character of the Basic Multilingual Plane between two letters.
//!
//! Consequences of the reference behaviour that callers may find surprising,
//! all reproduced on purpose:
//! - brackets become `-lrb-`, `-rrb-`, `-lsb-`, `-rsb-`, `-lcb-`, `-rcb-` and
//!   are *kept*, because the punctuation list spells them upper-case and the
//!   tokens are lower-cased first;
//! - contractions split (`don't` -> `do n't`, `it's` -> `it 's`,
//!   `cannot` -> `can not`, `gonna` -> `gon na`), possessive `'s` splits off,
//!   while a bare closing `'` (`dogs'`) is dropped as punctuation;
//! - abbreviations keep their period (`mr.`, `e.g.`, `etc.`, `st.`, and any
//!   single letter before a period, as in `vitamin c.`);
//! - `?!`, `!!`, `??` and runs of five or more hyphens are not in the list and
//!   survive; so do `%`, `$`, `#`, `&`, `*`, `/`, `=`, `@`;
//! - phone-number and fraction shapes are single tokens with U+00A0 inside
//!   (`5 1/2` -> `5\u{a0}1/2`, `100 200 300` -> `100\u{a0}200\u{a0}300`);
//! - characters the lexer does not know are deleted: control characters,
//!   emoji and everything else outside the Basic Multilingual Plane, and
//!   symbols outside the ranges CoreNLP lists.
//!
//! Like ptbtokenizer.py, [`PtbTokenizer::tokenize_lines`] lexes all captions
//! as one newline-separated text, so a caption's last token sees the start of
//! the next caption as right context (`... letter I.` keeps `i.` unless the
//! next caption starts with a word such as `The`, where the period splits
//! off). Results are therefore identical to pycocoevalcap's for the same
//! caption order; [`tokenize`] uses id order, then caption order.
//!
//! Known divergences of the native tokenizer from pycocoevalcap:
//! - A caption containing a line break other than `\n` (`\r`, U+2028,
//!   U+2029, U+000B, U+000C) makes the Java tokenizer emit an extra line, and
//!   ptbtokenizer.py then pairs every later caption with the wrong line. Here
//!   such characters are spaces (and [`JavaPtbTokenizer`] replaces them with
//!   spaces before running the jar, so the two agree).
//! - Letters and digits are those of the JDK that built CoreNLP 3.4.1,
//!   written as today's Unicode classes minus an explicit list of later
//!   additions; characters a future Unicode update adds to the regex crate's
//!   tables would be letters here but not there.
//! - Lower-casing is Rust's; Java's differs on rare mixed-script final-sigma
//!   contexts (a `Σ` after a non-Greek letter).

mod java;
mod rules;

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use java::JavaPtbTokenizer;
use rules::{Action, Lexer};

/// The tokens pycocoevalcap drops after PTB tokenisation (`PUNCTUATIONS` in
/// ptbtokenizer.py), compared against the already lower-cased tokens.
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Native Stanford PTB tokenizer (CoreNLP 3.4.1 rules). Building it compiles
/// the rule table, so build one and reuse it; [`tokenize_caption`] and
/// [`tokenize`] share a process-wide instance.
pub struct PtbTokenizer {
    lexer: Lexer,
}

impl Default for PtbTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl PtbTokenizer {
    pub fn new() -> PtbTokenizer {
        PtbTokenizer {
            lexer: Lexer::new(),
        }
    }

    /// The lower-cased PTB tokens of one caption on its own, punctuation
    /// included.
    pub fn tokens(&self, caption: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        self.lex(&sanitize(caption), |token| {
            if let Lexed::Word(word) = token {
                tokens.push(word);
            }
        });
        tokens
    }

    /// One caption on its own as pycocoevalcap scores it: lower-cased PTB
    /// tokens without the [`PUNCTUATIONS`], joined by single spaces.
    pub fn tokenize(&self, caption: &str) -> String {
        self.tokenize_lines(&[caption]).swap_remove(0)
    }

    /// What `PTBTokenizer -preserveLines -lowerCase` prints for these
    /// captions written one per line, split back into one line per caption
    /// (punctuation included).
    pub fn raw_lines(&self, captions: &[&str]) -> Vec<String> {
        let text = captions
            .iter()
            .map(|c| sanitize(c))
            .collect::<Vec<_>>()
            .join("\n");
        // Printed as PTBTokenizer's main does with -preserveLines: tokens
        // separated by a space, a newline for each newline token. A token
        // that spans a line end (a quoted SGML attribute) is printed as is,
        // which is why the output is split afterwards rather than per token.
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        let mut line_start = true;
        self.lex(&text, |token| match token {
            Lexed::LineBreak => {
                out.push('\n');
                line_start = true;
            }
            Lexed::Word(word) => {
                if !line_start {
                    out.push(' ');
                }
                out.push_str(&word);
                line_start = false;
            }
        });
        let mut lines: Vec<String> = out.split('\n').map(str::to_string).collect();
        // One line per newline token plus one, so never short; kept total.
        lines.resize(captions.len().max(lines.len()), String::new());
        lines.truncate(captions.len());
        lines
    }

    /// Each caption as pycocoevalcap scores it, lexed together in this order
    /// exactly as ptbtokenizer.py does.
    pub fn tokenize_lines(&self, captions: &[&str]) -> Vec<String> {
        self.raw_lines(captions)
            .iter()
            .map(|l| strip_punctuation(l))
            .collect()
    }

    /// Scans `text`, handing each token (lower-cased) or line break to `emit`.
    fn lex(&self, text: &str, mut emit: impl FnMut(Lexed)) {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.lexer.next_match(text, pos) else {
                // Unreachable: the last rule matches any character but
                // `\n`, which the NEWLINE rule matches.
                break;
            };
            let rule = &self.lexer.rules[m.rule];
            tracing::trace!(rule = rule.name, len = m.len, "ptb match");
            let action = rule.action;
            let matched = &text[pos..pos + m.len];
            if action == Action::LineBreak {
                emit(Lexed::LineBreak);
                pos += m.len;
                continue;
            }
            let (token, advance) = apply(action, matched);
            if let Some(token) = token {
                emit(Lexed::Word(token.to_lowercase()));
            }
            pos += advance.max(1);
        }
    }
}

/// A scanner result: a token or a line break (the `*NL*` token).
enum Lexed {
    Word(String),
    LineBreak,
}

/// ptbtokenizer.py replaces `\n` in captions with a space; the other
/// characters the lexer ends lines at are replaced too, so that captions and
/// output lines stay paired (see the module docs).
fn sanitize(caption: &str) -> String {
    caption.replace(['\n', '\r', '\u{2028}', '\u{2029}', '\u{b}', '\u{c}'], " ")
}

/// ptbtokenizer.py's post-processing of one output line:
/// `' '.join(w for w in line.rstrip().split(' ') if w not in PUNCTUATIONS)`.
pub fn strip_punctuation(line: &str) -> String {
    line.trim_end_matches(is_python_space)
        .split(' ')
        .filter(|w| !PUNCTUATIONS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.isspace`, which `str.rstrip()` and `str.split()` use (it
/// includes the separators U+001C..U+001F that Rust's `char::is_whitespace`
/// does not).
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn shared() -> &'static PtbTokenizer {
    static TOKENIZER: OnceLock<PtbTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(PtbTokenizer::new)
}

/// One caption, tokenized as pycocoevalcap does (see [`PtbTokenizer::tokenize`]).
pub fn tokenize_caption(caption: &str) -> String {
    shared().tokenize(caption)
}

/// pycocoevalcap's `PTBTokenizer().tokenize` over `{id: [caption, ...]}`,
/// the captions lexed in id order, then list order.
pub fn tokenize(captions: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let flat: Vec<&str> = captions.values().flatten().map(String::as_str).collect();
    let mut lines = shared().tokenize_lines(&flat).into_iter();
    captions
        .iter()
        .map(|(id, caps)| (id.clone(), lines.by_ref().take(caps.len()).collect()))
        .collect()
}

/// Runs a rule's action on the text it matched: the token it produces (if
/// any) and how many bytes the scanner moves on (less than the match after a
/// `yypushback`).
fn apply(action: Action, text: &str) -> (Option<String>, usize) {
    let len = text.len();
    let token = match action {
        Action::Keep => text.to_string(),
        Action::Skip | Action::Delete | Action::LineBreak => return (None, len),
        Action::Replace(fixed) => fixed.to_string(),
        Action::PushBack(n) => {
            let keep = byte_len_without_last_chars(text, n);
            return (Some(text[..keep].to_string()), keep);
        }
        Action::Quotes { left } => latex_quotes(text, left),
        Action::SoftHyphens => remove_soft_hyphens(text),
        Action::Nbsp => text.replace(' ', "\u{a0}"),
        Action::Phone => text
            .replace(' ', "\u{a0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
        Action::Smiley => text.replace('(', "-LRB-").replace(')', "-RRB-"),
        Action::Dashes => {
            let n = text.chars().count();
            if (3..=4).contains(&n) {
                "--".to_string()
            } else {
                text.to_string()
            }
        }
        Action::Fraction => text
            .replace('\u{bc}', "1/4")
            .replace('\u{bd}', "1/2")
            .replace('\u{be}', "3/4")
            .replace('\u{2153}', "1/3")
            .replace('\u{2154}', "2/3"),
        Action::Currency => text
            .replace('\u{a2}', "cents")
            .replace('\u{a3}', "#")
            .replace(['\u{80}', '\u{a4}', '\u{20a0}', '\u{20ac}'], "$"),
        Action::Amp => replace_ascii_caseless(text, "&amp;", "&"),
        Action::DuplicatePeriod => {
            // The token keeps its period and the period is scanned again.
            return (Some(text.to_string()), len - 1);
        }
        Action::Acronym => {
            if text.chars().count() == 2 {
                // "I." before a sentence start: the letter, then the period.
                let keep = byte_len_without_last_chars(text, 1);
                return (Some(text[..keep].to_string()), keep);
            }
            return (Some(text.to_string()), len - 1);
        }
    };
    (Some(token), len)
}

fn byte_len_without_last_chars(text: &str, n: usize) -> usize {
    text.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i)
}

/// CoreNLP's `removeSoftHyphens`: a token made only of soft hyphens becomes
/// a plain hyphen.
fn remove_soft_hyphens(text: &str) -> String {
    let out: String = text.chars().filter(|&c| c != '\u{ad}').collect();
    if out.is_empty() {
        "-".to_string()
    } else {
        out
    }
}

/// CoreNLP's `latexQuotes`: straight quotes by the guessed side, then the
/// CP1252 and Unicode curly quotes to their LaTeX forms.
fn latex_quotes(text: &str, left: bool) -> String {
    let (single, double) = if left { ("`", "``") } else { ("'", "''") };
    let text = text.replace("&apos;", single).replace('\'', single);
    let text = text.replace("&quot;", double).replace('"', double);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201b}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203a}' => out.push('\''),
            '\u{93}' | '\u{201c}' | '\u{ab}' => out.push_str("``"),
            '\u{94}' | '\u{201d}' | '\u{bb}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

fn replace_ascii_caseless(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find(from) {
        out.push_str(&text[i..i + found]);
        out.push_str(to);
        i += found + from.len();
    }
    out.push_str(&text[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contractions_and_brackets_follow_the_reference() {
        let t = shared();
        assert_eq!(
            t.tokenize("A man's dog (black) doesn't eat."),
            "a man 's dog -lrb- black -rrb- does n't eat"
        );
        assert_eq!(t.tokenize("I cannot go, gonna"), "i can not go gon na");
    }

    #[test]
    fn punctuation_only_captions_become_empty() {
        assert_eq!(tokenize_caption("..."), "");
        assert_eq!(tokenize_caption(""), "");
        assert_eq!(tokenize_caption("  \t "), "");
    }

    #[test]
    fn quotes_are_normalised_by_side() {
        assert_eq!(latex_quotes("\"", true), "``");
        assert_eq!(latex_quotes("\u{201d}", false), "''");
        assert_eq!(latex_quotes("n\u{2019}t", false), "n't");
    }
}

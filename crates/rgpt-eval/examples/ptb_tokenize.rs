//! Tokenizes stdin, one caption a line, as pycocoevalcap does (native
//! tokenizer; all lines lexed together like ptbtokenizer.py). `--raw` prints
//! the lower-cased PTB tokens before punctuation removal.
use std::io::{BufRead, Write};

use rgpt_eval::caption::PtbTokenizer;

fn main() -> std::io::Result<()> {
    let raw = std::env::args().any(|a| a == "--raw");
    let lines: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let captions: Vec<&str> = lines.iter().map(String::as_str).collect();
    let tokenizer = PtbTokenizer::new();
    let out = if raw {
        tokenizer.raw_lines(&captions)
    } else {
        tokenizer.tokenize_lines(&captions)
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for line in out {
        writeln!(stdout, "{line}")?;
    }
    Ok(())
}

//! Evaluation (paper Sec. 4): COCO-2017 region classification (mAP, accuracy),
//! RefCOCOg / Visual Genome region captioning (METEOR, CIDEr), RefCOCOg
//! referring-expression comprehension and POPE hallucination, with metrics that
//! agree with pycocotools, pycocoevalcap and POPE's script.
//!
//! [`caption`] holds the captioning metrics (BLEU, METEOR, ROUGE-L, CIDEr) as
//! pycocoevalcap 1.2 computes them, including its PTB tokenisation.

pub mod caption;
pub mod coco_ap;
mod error;
pub mod items;
pub mod pope;
pub mod predictions;
pub mod rec;
pub mod results;
pub mod runner;

pub use error::EvalError;

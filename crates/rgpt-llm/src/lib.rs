//! The language decoder of RegionGPT: a LLaMA-family model (Vicuna-7B in the
//! paper, Sec. 3.1) on libtorch, configured from a Hugging Face `config.json`
//! and loaded from HF weights as they are. It owns the decoder itself, its
//! preallocated KV cache, text generation, tokenizers (`tokenizer.json` or a
//! SentencePiece `tokenizer.model`), the conversation templates RGPT uses,
//! and LoRA adapters for fine-tuning it on one GPU.

pub mod batching;
pub mod config;
pub mod conversation;
pub mod device;
mod error;
pub mod generation;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod packing;
pub mod pipeline;
mod rope;
pub mod scoring;
pub mod sentencepiece;
pub mod tokenizer;

pub use config::LlamaConfig;
pub use conversation::{Conversation, RenderedConversation, Role, Template};
pub use error::LlmError;
pub use generation::{
    generate, generate_from_embeds, GenerationConfig, GenerationOutput, Sampling,
};
pub use kv_cache::KvCache;
pub use llama::Llama;
pub use lora::LoraConfig;
pub use packing::Packing;
pub use pipeline::{stream_completion, Completion, TextGenerator};
pub use rgpt_weights::LoadProgress;
pub use tokenizer::{StreamDecoder, Tokenizer};

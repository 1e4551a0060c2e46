use std::path::PathBuf;

/// Errors of the language-decoder crate; each names the file, tensor or
/// argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model directory {0} does not exist")]
    MissingModelDir(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "unsupported architecture `{found}` in {path}: rgpt-llm runs LLaMA-family decoders \
         (model_type \"llama\", e.g. Vicuna, LLaMA-2/3)"
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error(transparent)]
    Weights(#[from] rgpt_weights::WeightsError),
    #[error("no tokenizer in {0}: expected tokenizer.json or a SentencePiece tokenizer.model")]
    MissingTokenizer(PathBuf),
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error(transparent)]
    SentencePiece(#[from] crate::sentencepiece::SentencePieceError),
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("invalid generation request: {0}")]
    InvalidRequest(String),
    #[error(
        "the prompt has {prompt_tokens} tokens but the model's max_position_embeddings is \
         {max_positions}: shorten the prompt"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        max_positions: usize,
    },
    #[error("unknown device `{0}`: use cpu, cuda, cuda:N or auto")]
    UnknownDevice(String),
    #[error("--device {0}: CUDA is not available on this machine (no GPU, or libtorch without CUDA); use --device cpu")]
    CudaUnavailable(String),
    #[error("unknown dtype `{0}`: use f32, bf16 or f16")]
    UnknownDtype(String),
    #[error("invalid LoRA config: {field}: {message}")]
    Lora {
        field: &'static str,
        message: String,
    },
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

//! Weight loading shared by every RGPT model crate.
//!
//! A Hugging Face model directory holds its weights as safetensors or as
//! PyTorch `torch.save` archives (`pytorch_model.bin`), either in one file or
//! sharded behind an `*.index.json`. [`Checkpoint`] memory-maps every file,
//! indexes each tensor by its HF name, and copies tensors one at a time into
//! the variables of a `tch::nn::VarStore` whose paths are those same names, so
//! no checkpoint needs converting and none is read whole into memory.

mod checkpoint;
mod dtype;
mod error;
mod load;
mod pickle;
mod pytorch_bin;
mod raw;
pub mod save;

pub use checkpoint::{Checkpoint, LoadProgress, WeightFormat};
pub use dtype::Dtype;
pub use error::WeightsError;
pub use load::{load_frozen, read_json};

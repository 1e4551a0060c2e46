//! The vision side of RegionGPT (paper Sec. 3.1): the frozen CLIP ViT-L/14-336
//! or SigLIP encoder that turns an image into a low-resolution feature map, and
//! the feature refinement module (two stride-2 transposed convolutions, 4x
//! upsampling) that makes that map high-resolution enough for region pooling.
//! Encoders load Hugging Face checkpoints as they are, through `rgpt-weights`.

pub mod clip;
pub mod clip_text;
pub mod clip_tokenizer;
mod encoder;
pub mod error;
mod hf_config;
pub mod preprocess;
pub mod refiner;
pub mod resample;
pub mod siglip;
pub mod tower;

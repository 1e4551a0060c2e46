//! RecapD (paper Sec. 3.3): detailed region captions written by a VLM in
//! two stages, a global caption of the image and then a caption of each
//! region's close-up conditioned on it (and on the region's class name),
//! filtered by CLIP's image-text score. This module holds the pieces that
//! do not need a model: the prompts of both stages.
pub mod prompts;

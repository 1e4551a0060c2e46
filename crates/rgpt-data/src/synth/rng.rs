//! Random streams keyed by (seed, image, purpose): each image's layout and
//! each of its tasks draw from their own ChaCha8 stream, so nothing depends
//! on which thread made an image, on what was made before it, or on which
//! other tasks were built.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Scene = 0,
    Shape = 1,
    Color = 2,
    Caption = 3,
    Rec = 4,
    ImageCaption = 5,
}

/// The stream of `purpose` for image `index` of the world seeded `seed`.
pub fn stream_rng(seed: u64, index: u64, purpose: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(&(purpose as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

//! The feature refinement module, paper Sec. 3.1 ("two deconvolution layers
//! of stride 2 to produce feature maps up-scaled by 4x") and the variants of
//! its ablation, Table 6: bilinear 4x, bilinear 16x, deconv + bilinear (16x)
//! and none.
//!
//! The paper does not say what sits between or after the two
//! deconvolutions; the reference decides. NVIDIA's SpatialRGPT (GitHub
//! `AnjieCheng/SpatialRGPT`, commit 16715d4, Apache-2.0, same research
//! group) builds RegionGPT's extractor (`regiongpt`) in
//! `llava/model/region_extractor/base_extractor.py`: its `deconv2x`
//! refinement is ConvTranspose2d(C, C, 2, 2) -> LayerNorm2d (eps 1e-6) ->
//! GELU -> ConvTranspose2d(C, C, 2, 2) -> GELU, channels kept at C. That is
//! [`RefinerKind::Deconv`]. [`RefinerKind::DeconvNoFinalGelu`] is the stack
//! this crate built before it followed the reference (the same layers
//! without the trailing GELU, the 4x upscaler of SAM's mask decoder without
//! its last activation); the demo's from-scratch model keeps it, and
//! `deconv+bilinear` (Table 6's variant, ours alone) uses it too. LayerNorm2d
//! normalises each position over its channels, so it behaves the same for
//! any batch size and grid.
//!
//! Tensor names, under the path given to [`FeatureRefiner::new`], the same
//! for every deconv kind:
//! - `feature_refiner.deconv1.weight` `[C, C, 2, 2]` (PyTorch's
//!   ConvTranspose2d layout `[in, out, kh, kw]`), `feature_refiner.deconv1.bias` `[C]`
//! - `feature_refiner.norm.weight`, `feature_refiner.norm.bias` `[C]`
//! - `feature_refiner.deconv2.weight`, `feature_refiner.deconv2.bias`, as deconv1
//!
//! Only the deconv kinds have variables; they are trainable (the paper
//! updates the refiner in both training stages).
use serde::{Deserialize, Serialize};
use tch::nn::Init;
use tch::{nn, TchError, Tensor};

const LAYER_NORM_EPS: f64 = 1e-6;

/// A kind by its config name; the error lists the names.
impl std::str::FromStr for RefinerKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        RefinerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = RefinerKind::ALL.iter().map(RefinerKind::name).collect();
                format!("unknown refiner `{name}`: use one of {}", names.join(", "))
            })
    }
}

/// Which refinement Table 6 compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RefinerKind {
    /// The paper's two stride-2 deconvolutions (4x) as the reference builds
    /// them: LayerNorm2d and GELU between, GELU after.
    #[default]
    #[serde(rename = "deconv")]
    Deconv,
    /// The same deconvolutions without the trailing GELU (this crate's
    /// refiner before it followed the reference; the demo's).
    #[serde(rename = "deconv_no_final_gelu")]
    DeconvNoFinalGelu,
    /// Bilinear upsampling by 4 (align_corners = False).
    #[serde(rename = "bilinear4")]
    Bilinear4,
    /// Bilinear upsampling by 16.
    #[serde(rename = "bilinear16")]
    Bilinear16,
    /// The deconvolutions of `deconv_no_final_gelu`, then bilinear by 4:
    /// 16x in all.
    #[serde(rename = "deconv+bilinear")]
    DeconvBilinear,
    /// The backbone's map as it is.
    #[serde(rename = "none")]
    None,
}

impl RefinerKind {
    /// Every kind, in Table 6's order after the reference's own.
    pub const ALL: [RefinerKind; 6] = [
        RefinerKind::Deconv,
        RefinerKind::DeconvNoFinalGelu,
        RefinerKind::Bilinear4,
        RefinerKind::Bilinear16,
        RefinerKind::DeconvBilinear,
        RefinerKind::None,
    ];

    /// The name configs use (`deconv`, `bilinear4`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            RefinerKind::Deconv => "deconv",
            RefinerKind::DeconvNoFinalGelu => "deconv_no_final_gelu",
            RefinerKind::Bilinear4 => "bilinear4",
            RefinerKind::Bilinear16 => "bilinear16",
            RefinerKind::DeconvBilinear => "deconv+bilinear",
            RefinerKind::None => "none",
        }
    }

    /// Output cells per input cell along each axis.
    pub fn upscale(&self) -> i64 {
        match self {
            RefinerKind::Deconv | RefinerKind::DeconvNoFinalGelu | RefinerKind::Bilinear4 => 4,
            RefinerKind::Bilinear16 | RefinerKind::DeconvBilinear => 16,
            RefinerKind::None => 1,
        }
    }

    /// The bilinear factor applied after the deconvolutions (if any).
    fn bilinear_factor(&self) -> i64 {
        match self {
            RefinerKind::Bilinear4 | RefinerKind::DeconvBilinear => 4,
            RefinerKind::Bilinear16 => 16,
            RefinerKind::Deconv | RefinerKind::DeconvNoFinalGelu | RefinerKind::None => 1,
        }
    }

    fn has_deconv(&self) -> bool {
        matches!(
            self,
            RefinerKind::Deconv | RefinerKind::DeconvNoFinalGelu | RefinerKind::DeconvBilinear
        )
    }

    /// Whether the deconvolutions end with a GELU (the reference's).
    fn final_gelu(&self) -> bool {
        matches!(self, RefinerKind::Deconv)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefinerError {
    #[error("feature_refiner: expected [B, N, C] tokens (N a square) or [B, C, H, W] maps with C = {channels}, got {shape:?}")]
    InputShape { channels: i64, shape: Vec<i64> },
    #[error("{what}: expected {expected}, got {shape:?}")]
    Rank {
        what: &'static str,
        expected: &'static str,
        shape: Vec<i64>,
    },
    #[error("{what}: {tokens} tokens do not fill a {h}x{w} grid")]
    Grid {
        what: &'static str,
        tokens: i64,
        h: i64,
        w: i64,
    },
    #[error(transparent)]
    Tensor(#[from] TchError),
}

/// `nn.ConvTranspose2d(C, C, kernel_size=2, stride=2)`.
#[derive(Debug)]
struct Deconv {
    weight: Tensor, // [in, out, 2, 2]
    bias: Tensor,   // [out]
}

impl Deconv {
    fn new(vs: nn::Path, channels: i64) -> Self {
        // PyTorch's default init (kaiming_uniform with a = sqrt(5), which is
        // U(+-1/sqrt(fan_in))), with fan_in = out * 2 * 2 for a transposed
        // conv's [in, out, kh, kw] weight. Zeros would stop the gradient of
        // deconv1 at deconv2's weight when training from scratch.
        let bound = 1.0 / ((channels * 4) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Deconv {
            weight: vs.var("weight", &[channels, channels, 2, 2], init),
            bias: vs.var("bias", &[channels], init),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv_transpose2d(
            &self.weight,
            Some(&self.bias),
            [2, 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

/// SAM / ViTDet `LayerNorm2d`: LayerNorm over the channel axis of NCHW.
#[derive(Debug)]
struct LayerNorm2d {
    weight: Tensor, // [C]
    bias: Tensor,   // [C]
}

impl LayerNorm2d {
    fn new(vs: nn::Path, channels: i64) -> Self {
        LayerNorm2d {
            weight: vs.var("weight", &[channels], Init::Const(1.0)),
            bias: vs.var("bias", &[channels], Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let u = x.mean_dim(1, true, x.kind());
        let d = x - u;
        let s = d.square().mean_dim(1, true, x.kind());
        let x = d / (s + LAYER_NORM_EPS).sqrt();
        let c = self.weight.size()[0];
        self.weight.view([1, c, 1, 1]) * x + self.bias.view([1, c, 1, 1])
    }
}

#[derive(Debug)]
struct DeconvStack {
    deconv1: Deconv,
    norm: LayerNorm2d,
    deconv2: Deconv,
    /// GELU after deconv2 (the reference's `deconv2x`).
    final_gelu: bool,
}

impl DeconvStack {
    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let x = self.deconv1.forward(x)?;
        // nn.GELU() is the exact (erf) GELU.
        let x = self.norm.forward(&x).f_gelu("none")?;
        let x = self.deconv2.forward(&x)?;
        if self.final_gelu {
            x.f_gelu("none")
        } else {
            Ok(x)
        }
    }
}

/// The refinement module `g` of Sec. 3.1: `Z_HRes = g(Z_LRes)`.
#[derive(Debug)]
pub struct FeatureRefiner {
    kind: RefinerKind,
    channels: i64,
    deconv: Option<DeconvStack>,
}

impl FeatureRefiner {
    /// Variables go under `vs / "feature_refiner"`, so `new(&vs.root(), ..)`
    /// gives the `feature_refiner.*` names of the module header.
    pub fn new(vs: &nn::Path, kind: RefinerKind, channels: i64) -> Self {
        let vs = vs / "feature_refiner";
        let deconv = kind.has_deconv().then(|| DeconvStack {
            deconv1: Deconv::new(&vs / "deconv1", channels),
            norm: LayerNorm2d::new(&vs / "norm", channels),
            deconv2: Deconv::new(&vs / "deconv2", channels),
            final_gelu: kind.final_gelu(),
        });
        FeatureRefiner {
            kind,
            channels,
            deconv,
        }
    }

    pub fn kind(&self) -> RefinerKind {
        self.kind
    }

    pub fn channels(&self) -> i64 {
        self.channels
    }

    /// The grid the backbone produced a `refined` map from: its `[H, W]`
    /// divided by the upscale, the default grid for [`image_tokens`].
    pub fn backbone_grid(&self, refined: &Tensor) -> Result<(i64, i64), RefinerError> {
        let shape = refined.size();
        let s = self.kind.upscale();
        match *shape.as_slice() {
            [_, _, h, w] if h % s == 0 && w % s == 0 => Ok((h / s, w / s)),
            _ => Err(RefinerError::Rank {
                what: "backbone_grid",
                expected: "a refined [B, C, H, W] map with H and W multiples of the upscale",
                shape,
            }),
        }
    }

    /// `[B, N, C]` patch tokens on a square grid (no CLS token) or a
    /// `[B, C, H, W]` map, to the refined `[B, C, H * s, W * s]` map, `s` =
    /// [`RefinerKind::upscale`]. Non-square grids must come as maps (see
    /// [`tokens_to_map`]).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor, RefinerError> {
        let shape = features.size();
        let map = match *shape.as_slice() {
            [_, n, c] if c == self.channels => {
                let side = (n as f64).sqrt().round() as i64;
                if side * side != n {
                    return Err(RefinerError::InputShape {
                        channels: self.channels,
                        shape,
                    });
                }
                tokens_to_map(features, (side, side))?
            }
            [_, c, _, _] if c == self.channels => features.shallow_clone(),
            _ => {
                return Err(RefinerError::InputShape {
                    channels: self.channels,
                    shape,
                })
            }
        };
        let map = match &self.deconv {
            Some(d) => d.forward(&map)?,
            None => map,
        };
        let out = match self.kind.bilinear_factor() {
            1 => map,
            f => upsample(&map, f)?,
        };
        Ok(out)
    }
}

/// Bilinear upsampling by an integer factor, align_corners = False, as
/// `F.interpolate(x, scale_factor=f, mode="bilinear")`.
fn upsample(x: &Tensor, factor: i64) -> Result<Tensor, TchError> {
    let s = x.size();
    x.f_upsample_bilinear2d([s[2] * factor, s[3] * factor], false, None, None)
}

/// ViT patch tokens `[B, N, C]` (row-major, N = h * w, no CLS token) to the
/// map `[B, C, h, w]`.
pub fn tokens_to_map(tokens: &Tensor, grid: (i64, i64)) -> Result<Tensor, RefinerError> {
    let shape = tokens.size();
    let (h, w) = grid;
    match *shape.as_slice() {
        [b, n, c] if n == h * w && h > 0 && w > 0 => {
            Ok(tokens.f_transpose(1, 2)?.f_reshape([b, c, h, w])?)
        }
        [_, n, _] => Err(RefinerError::Grid {
            what: "tokens_to_map",
            tokens: n,
            h,
            w,
        }),
        _ => Err(RefinerError::Rank {
            what: "tokens_to_map",
            expected: "[B, N, C] tokens",
            shape,
        }),
    }
}

/// The image-level tokens of Fig. 2: the refined map `[B, C, H, W]` average
/// pooled (`adaptive_avg_pool2d`) to `grid` and flattened row-major to
/// `[B, h * w, C]`. With the backbone's own grid (24x24 for CLIP ViT-L/14 at
/// 336; see [`FeatureRefiner::backbone_grid`]) the LLM's image sequence stays
/// as long as LLaVA's, while the region branch pools the full-resolution map.
pub fn image_tokens(refined: &Tensor, grid: (i64, i64)) -> Result<Tensor, RefinerError> {
    let shape = refined.size();
    let (h, w) = grid;
    if shape.len() != 4 {
        return Err(RefinerError::Rank {
            what: "image_tokens",
            expected: "a [B, C, H, W] map",
            shape,
        });
    }
    if h <= 0 || w <= 0 {
        return Err(RefinerError::Grid {
            what: "image_tokens",
            tokens: h.max(0) * w.max(0),
            h,
            w,
        });
    }
    Ok(refined
        .f_adaptive_avg_pool2d([h, w])?
        .f_flatten(2, 3)?
        .f_transpose(1, 2)?)
}

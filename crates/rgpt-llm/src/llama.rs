//! The LLaMA decoder, after transformers' `modeling_llama.py` (v5.23):
//! pre-norm blocks of RMSNorm, grouped-query attention with RoPE, and a SwiGLU
//! MLP, then a final RMSNorm and the LM head (tied to the embeddings when the
//! config says so). Variable paths are the HF tensor names
//! (`model.layers.{i}.self_attn.q_proj.weight`, ...), so checkpoints load
//! as they are. The forward takes input embeddings, because RegionGPT splices
//! image and region embeddings into the sequence; mutable state (the KV
//! cache) is an argument, so the model itself is shared read-only. LoRA
//! adapters (`crate::lora`, PEFT's) can be added to the linear layers for
//! fine-tuning and merged back into them.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use rgpt_weights::LoadProgress;
use tch::nn::Init;
use tch::{nn, Device, Kind, Tensor};

use crate::config::LlamaConfig;
use crate::kv_cache::{KvCache, SlotCache, SlotStep, StepLayout};
use crate::lora::{LoraAdapter, LoraConfig};
use crate::packing::Packing;
use crate::rope::{apply_rotary, RotaryEmbedding};
use crate::LlmError;

#[derive(Debug)]
struct Linear {
    weight: Tensor, // [out, in]
    bias: Option<Tensor>,
    lora: Option<LoraAdapter>,
}

impl Linear {
    fn new(vs: nn::Path, in_dim: usize, out_dim: usize, bias: bool) -> Self {
        let weight = vs.var("weight", &[out_dim as i64, in_dim as i64], Init::Const(0.0));
        let bias = bias.then(|| vs.var("bias", &[out_dim as i64], Init::Const(0.0)));
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    fn trains(&self) -> bool {
        self.weight.requires_grad()
            || self.bias.as_ref().is_some_and(Tensor::requires_grad)
            || self.lora.as_ref().is_some_and(LoraAdapter::trains)
    }

    /// The same layer, sharing its tensors.
    fn shallow_clone(&self) -> Self {
        Linear {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
            lora: self.lora.as_ref().map(LoraAdapter::shallow_clone),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.lora {
            Some(lora) => y + lora.forward(x),
            None => y,
        }
    }

    /// Whether `vs` (this layer's path) holds this layer's weight.
    fn is_at(&self, vs: &nn::Path) -> bool {
        vs.get("weight")
            .is_some_and(|w| w.data_ptr() == self.weight.data_ptr())
    }

    fn add_lora<R: rand::Rng>(&mut self, vs: &nn::Path, config: &LoraConfig, rng: &mut R) {
        let size = self.weight.size(); // [out, in]
        self.lora = Some(LoraAdapter::new(vs, size[1], size[0], config, rng));
    }

    /// Folds the adapter into the weight and gives it back.
    fn merge_lora(&mut self) -> Option<LoraAdapter> {
        let lora = self.lora.take()?;
        let _guard = tch::no_grad_guard();
        self.weight += lora.delta_weight(&self.weight);
        Some(lora)
    }
}

/// `LlamaRMSNorm`: normalises in f32 and casts back before the weight, as HF
/// does, so bf16/f16 runs round like the reference.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn shallow_clone(&self) -> Self {
        RmsNorm {
            weight: self.weight.shallow_clone(),
            eps: self.eps,
        }
    }

    fn new(vs: nn::Path, dim: usize, eps: f64) -> Self {
        RmsNorm {
            weight: vs.var("weight", &[dim as i64], Init::Const(1.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.square().mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(vs: nn::Path, cfg: &LlamaConfig) -> Self {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads());
        Attention {
            q_proj: Linear::new(&vs / "q_proj", h, nh * hd, cfg.attention_bias),
            k_proj: Linear::new(&vs / "k_proj", h, nkv * hd, cfg.attention_bias),
            v_proj: Linear::new(&vs / "v_proj", h, nkv * hd, cfg.attention_bias),
            o_proj: Linear::new(&vs / "o_proj", nh * hd, h, cfg.attention_bias),
            num_heads: nh as i64,
            num_kv_heads: nkv as i64,
            head_dim: hd as i64,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        layer: usize,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (q, k, v) = self.project(x, &step.cos, &step.sin);
        let (k, v) = match cache {
            Some(cache) => cache.update(layer, step.layout.start, &k, &v),
            None => (k, v),
        };
        let layout = &step.layout;
        let out = self.attend(&q, &k, &v, layout.attn_mask.as_ref(), layout.is_causal);
        self.output(&out)
    }

    /// One decode token for each of some slots of a batch cache
    /// ([`SlotCache`]): every row's key and value written and attended in
    /// one operation each.
    fn forward_slots(
        &self,
        x: &Tensor,
        step: &Step<SlotStep>,
        layer: usize,
        cache: &mut SlotCache,
    ) -> Tensor {
        let (q, k, v) = self.project(x, &step.cos, &step.sin);
        let (k, v) = cache.update(layer, &step.layout, &k, &v);
        let out = self.attend(&q, &k, &v, Some(&step.layout.attn_mask), false);
        self.output(&out)
    }

    /// Queries, keys and values [batch, heads, seq, head_dim] of `x`
    /// [batch, seq, hidden], rotated.
    fn project(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, t, _) = x.size3().expect("hidden states are [batch, seq, hidden]");
        let heads = |y: Tensor, n: i64| y.view([b, t, n, self.head_dim]).transpose(1, 2);
        let q = heads(self.q_proj.forward(x), self.num_heads);
        let k = heads(self.k_proj.forward(x), self.num_kv_heads);
        let v = heads(self.v_proj.forward(x), self.num_kv_heads);
        (apply_rotary(&q, cos, sin), apply_rotary(&k, cos, sin), v)
    }

    /// SDPA, grouped-query when the heads say so.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        is_causal: bool,
    ) -> Tensor {
        let gqa = self.num_heads != self.num_kv_heads;
        Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal, None, gqa)
    }

    /// `o_proj` over the heads' outputs [batch, heads, seq, head_dim].
    fn output(&self, out: &Tensor) -> Tensor {
        let (b, _, t, _) = out.size4().expect("attention outputs are 4-d");
        let out = out
            .transpose(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        self.o_proj.forward(&out)
    }
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(vs: nn::Path, cfg: &LlamaConfig) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&vs / "gate_proj", h, i, cfg.mlp_bias),
            up_proj: Linear::new(&vs / "up_proj", h, i, cfg.mlp_bias),
            down_proj: Linear::new(&vs / "down_proj", i, h, cfg.mlp_bias),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let gate = self.gate_proj.forward(x).silu();
        self.down_proj.forward(&(gate * self.up_proj.forward(x)))
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// The same layer, sharing its tensors: what a checkpointed segment
    /// owns to run the layer again in the backward pass.
    fn shallow_clone(&self) -> Self {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        DecoderLayer {
            self_attn: Attention {
                q_proj: attn.q_proj.shallow_clone(),
                k_proj: attn.k_proj.shallow_clone(),
                v_proj: attn.v_proj.shallow_clone(),
                o_proj: attn.o_proj.shallow_clone(),
                ..*attn
            },
            mlp: Mlp {
                gate_proj: mlp.gate_proj.shallow_clone(),
                up_proj: mlp.up_proj.shallow_clone(),
                down_proj: mlp.down_proj.shallow_clone(),
            },
            input_layernorm: self.input_layernorm.shallow_clone(),
            post_attention_layernorm: self.post_attention_layernorm.shallow_clone(),
        }
    }

    fn new(vs: nn::Path, cfg: &LlamaConfig) -> Self {
        DecoderLayer {
            self_attn: Attention::new(&vs / "self_attn", cfg),
            mlp: Mlp::new(&vs / "mlp", cfg),
            input_layernorm: RmsNorm::new(
                &vs / "input_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            post_attention_layernorm: RmsNorm::new(
                &vs / "post_attention_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
        }
    }

    /// The block's linear layer named `module` (one of
    /// [`crate::lora::TARGET_MODULES`]) with the sub-module it sits in.
    fn linear_mut(&mut self, module: &str) -> Option<(&'static str, &mut Linear)> {
        let (attn, mlp) = (&mut self.self_attn, &mut self.mlp);
        Some(match module {
            "q_proj" => ("self_attn", &mut attn.q_proj),
            "k_proj" => ("self_attn", &mut attn.k_proj),
            "v_proj" => ("self_attn", &mut attn.v_proj),
            "o_proj" => ("self_attn", &mut attn.o_proj),
            "gate_proj" => ("mlp", &mut mlp.gate_proj),
            "up_proj" => ("mlp", &mut mlp.up_proj),
            "down_proj" => ("mlp", &mut mlp.down_proj),
            _ => return None,
        })
    }

    /// Whether any of the layer's variables is trained.
    fn trains(&self) -> bool {
        let norms = [&self.input_layernorm, &self.post_attention_layernorm];
        self.linears().iter().any(|l| l.trains()) || norms.iter().any(|n| n.weight.requires_grad())
    }

    fn linears(&self) -> [&Linear; 7] {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        [
            &attn.q_proj,
            &attn.k_proj,
            &attn.v_proj,
            &attn.o_proj,
            &mlp.gate_proj,
            &mlp.up_proj,
            &mlp.down_proj,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        let (attn, mlp) = (&mut self.self_attn, &mut self.mlp);
        [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.o_proj,
            &mut mlp.gate_proj,
            &mut mlp.up_proj,
            &mut mlp.down_proj,
        ]
    }

    fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        layer: usize,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let h = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), step, layer, cache);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }

    fn forward_slots(
        &self,
        x: &Tensor,
        step: &Step<SlotStep>,
        layer: usize,
        cache: &mut SlotCache,
    ) -> Tensor {
        let h =
            x + self
                .self_attn
                .forward_slots(&self.input_layernorm.forward(x), step, layer, cache);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}

/// Per-forward state shared by all layers: where the tokens go
/// ([`StepLayout`] in a [`KvCache`], [`SlotStep`] in a [`SlotCache`]) and
/// their rotary angles.
struct Step<L = StepLayout> {
    layout: L,
    cos: Tensor,
    sin: Tensor,
}

impl Step {
    fn shallow_clone(&self) -> Self {
        Step {
            layout: self.layout.shallow_clone(),
            cos: self.cos.shallow_clone(),
            sin: self.sin.shallow_clone(),
        }
    }
}

/// `LlamaForCausalLM`.
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Tensor, // [vocab, hidden]
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor, // [vocab, hidden]; the embedding matrix when tied
    rotary: RotaryEmbedding,
    config: LlamaConfig,
    /// Recompute each layer in the backward pass instead of keeping its
    /// activations (training without a cache only).
    activation_checkpointing: bool,
}

impl Llama {
    /// Declares the model's variables under `vs` (the VarStore root), with
    /// the HF names, in the VarStore's kind and device. Weights are zeros
    /// until a checkpoint is loaded; they are trainable variables, which
    /// inference freezes (`from_pretrained` does) and fine-tuning keeps.
    pub fn new(vs: &nn::Path, config: &LlamaConfig) -> Result<Self, LlmError> {
        let scaling = config
            .rope_scaling_kind()
            .map_err(LlmError::InvalidRequest)?;
        let model = vs / "model";
        let embed_tokens = (&model / "embed_tokens").var(
            "weight",
            &[config.vocab_size as i64, config.hidden_size as i64],
            Init::Const(0.0),
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, config))
            .collect();
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            (vs / "lm_head").var(
                "weight",
                &[config.vocab_size as i64, config.hidden_size as i64],
                Init::Const(0.0),
            )
        };
        Ok(Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: RotaryEmbedding::new(config, &scaling, vs.device()),
            config: config.clone(),
            activation_checkpointing: false,
        })
    }

    /// Loads `config.json` and the weights of an HF model directory, casting
    /// them once to `kind` on `device`.
    pub fn from_pretrained(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, nn::VarStore), LlmError> {
        Self::from_pretrained_with_progress(dir, device, kind, &mut |_| {})
    }

    /// `from_pretrained`, reporting weight-copy progress.
    pub fn from_pretrained_with_progress(
        dir: &Path,
        device: Device,
        kind: Kind,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<(Self, nn::VarStore), LlmError> {
        let _span = tracing::info_span!("load_llama", dir = %dir.display()).entered();
        if !dir.is_dir() {
            return Err(LlmError::MissingModelDir(dir.to_path_buf()));
        }
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = rgpt_weights::Checkpoint::open(dir)?;
        rgpt_weights::load_frozen(
            &checkpoint,
            device,
            kind,
            |vs| Llama::new(&vs.root(), &config),
            on_progress,
        )
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Adds LoRA adapters to the `target_modules` of every decoder block:
    /// `lora_A` / `lora_B` variables under each module's path in the
    /// VarStore of `vs`, which must be the path [`Llama::new`] was given.
    /// The adapters are trainable variables (the base weights keep their
    /// `requires_grad`; freezing them is the caller's choice). A fresh
    /// adapter's `lora_B` is zero, so the model computes what it did before.
    /// `lora_A` is drawn from a ChaCha generator seeded with `seed`: the
    /// same seed gives the same adapters even while other threads draw from
    /// libtorch's global generator.
    pub fn add_lora(
        &mut self,
        vs: &nn::Path,
        config: &LoraConfig,
        seed: u64,
    ) -> Result<(), LlmError> {
        config.validate()?;
        if self.has_lora() {
            return Err(LlmError::InvalidRequest(
                "the model already has LoRA adapters: merge them first".into(),
            ));
        }
        let layers = vs / "model" / "layers";
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        // Check every target before creating anything, so a mistake leaves
        // the model and the VarStore as they were.
        for pass in [false, true] {
            for (i, layer) in self.layers.iter_mut().enumerate() {
                for module in &config.target_modules {
                    let (group, linear) =
                        layer.linear_mut(module).ok_or_else(|| LlmError::Lora {
                            field: "target_modules",
                            message: format!("unknown module `{module}`"),
                        })?;
                    let path = &layers / i / group / module.as_str();
                    if pass {
                        linear.add_lora(&path, config, &mut rng);
                    } else if !linear.is_at(&path) {
                        return Err(LlmError::InvalidRequest(format!(
                            "the VarStore path does not hold this model's {}",
                            path.path("weight")
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any linear layer has a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.adapters().next().is_some()
    }

    fn adapters(&self) -> impl Iterator<Item = (&Linear, &LoraAdapter)> {
        self.layers
            .iter()
            .flat_map(|layer| layer.linears())
            .filter_map(|linear| linear.lora.as_ref().map(|lora| (linear, lora)))
    }

    /// PEFT's `merge_and_unload`: folds every adapter into its base weight
    /// (`W += B A * alpha / r`, in place) and removes the adapters from the
    /// model and their variables from `vs`, leaving a plain LLaMA.
    pub fn merge_lora(&mut self, vs: &mut nn::VarStore) {
        let merged: Vec<LoraAdapter> = self
            .layers
            .iter_mut()
            .flat_map(DecoderLayer::linears_mut)
            .filter_map(Linear::merge_lora)
            .collect();
        if merged.is_empty() {
            return;
        }
        let mut variables = vs
            .variables_
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for lora in &merged {
            variables.named_variables.remove(&lora.a_name);
            variables.named_variables.remove(&lora.b_name);
        }
        variables
            .trainable_variables
            .retain(|var| !merged.iter().any(|lora| lora.owns(&var.tensor)));
    }

    /// What [`Llama::merge_lora`] would leave, without touching the model:
    /// a VarStore with every variable of `vs` (the one the model lives in),
    /// the adapted weights replaced by merged copies and the adapters left
    /// out. Other tensors are shared, not copied, so saving a merged model
    /// mid-training costs only the adapted weights' memory.
    pub fn merged_var_store(&self, vs: &nn::VarStore) -> nn::VarStore {
        let _guard = tch::no_grad_guard();
        let adapters: Vec<(&Linear, &LoraAdapter)> = self.adapters().collect();
        let base: HashMap<&str, (&Linear, &LoraAdapter)> = adapters
            .iter()
            .map(|&(linear, lora)| (lora.base_name.as_str(), (linear, lora)))
            .collect();
        let dropped: HashSet<&str> = adapters
            .iter()
            .flat_map(|(_, lora)| [lora.a_name.as_str(), lora.b_name.as_str()])
            .collect();
        let mut out = nn::VarStore::new(vs.device());
        out.set_kind(vs.kind());
        for (name, tensor) in vs.variables() {
            if dropped.contains(name.as_str()) {
                continue;
            }
            let tensor = match base.get(name.as_str()) {
                Some((linear, lora)) => &linear.weight + lora.delta_weight(&linear.weight),
                None => tensor,
            };
            let (dir, leaf) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
            let path = dir
                .split('.')
                .filter(|c| !c.is_empty())
                .fold(out.root(), |path, c| path.sub(c));
            let _ = path.add(leaf, tensor, false);
        }
        out
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// A cache for `batch` sequences of up to `capacity` tokens each.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        KvCache::new(&self.config, batch, capacity, self.kind(), self.device())
    }

    /// Token embeddings for ids [batch, seq] -> [batch, seq, hidden].
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// Runs the decoder over `embeds` [batch, seq, hidden] after what `cache`
    /// already holds; `mask` [batch, seq] marks real tokens (None: all real).
    /// Returns the final-normed hidden states [batch, seq, hidden].
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor, LlmError> {
        let (b, t, h) = embeds.size3()?;
        if h != self.config.hidden_size as i64 || b != cache.batch_size() {
            return Err(LlmError::InvalidRequest(format!(
                "embeddings of shape [{b}, {t}, {h}] do not fit a batch of {} with hidden size {}",
                cache.batch_size(),
                self.config.hidden_size
            )));
        }
        let layout = cache.begin_step(t, mask)?;
        let hidden = self.decode(embeds, layout, Some(&mut *cache));
        cache.commit(t);
        Ok(hidden)
    }

    /// The layers and the final norm over `embeds` laid out as `layout`
    /// says, writing keys and values to `cache` when there is one.
    fn decode(
        &self,
        embeds: &Tensor,
        layout: StepLayout,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (cos, sin) = self.rotary.cos_sin(&layout.position_ids, embeds.kind());
        let step = Step { layout, cos, sin };
        let mut x = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = match cache.as_deref_mut() {
                // A frozen layer over an input that needs no gradient has no
                // backward to save memory for.
                None if self.activation_checkpointing && (x.requires_grad() || layer.trains()) => {
                    let (layer, step) = (layer.shallow_clone(), step.shallow_clone());
                    rgpt_autograd::checkpoint(&x, move |x| layer.forward(x, &step, i, None))
                }
                cache => layer.forward(&x, &step, i, cache),
            };
        }
        self.norm.forward(&x)
    }

    /// Activation checkpointing (`torch.utils.checkpoint` per decoder
    /// layer): a forward pass without a cache keeps only each layer's
    /// input, and the backward pass runs the layer again. Same gradients,
    /// about one layer's activations of memory instead of all of them, and
    /// one more forward of compute.
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.activation_checkpointing = on;
    }

    /// Runs the decoder once over `embeds` [rows, row_len, hidden] that
    /// hold several sequences per row as `packing` placed them
    /// ([`Packing::pack`]), without a cache: for training. Returns the
    /// final-normed hidden states in the same packed layout
    /// ([`Packing::unpack`] turns them into one row per sequence).
    pub fn forward_packed(&self, embeds: &Tensor, packing: &Packing) -> Result<Tensor, LlmError> {
        let (rows, row_len, h) = embeds.size3()?;
        if h != self.config.hidden_size as i64
            || rows != packing.rows as i64
            || row_len != packing.row_len as i64
        {
            return Err(LlmError::InvalidRequest(format!(
                "embeddings of shape [{rows}, {row_len}, {h}] do not fit a packing of {} rows \
                 of {} with hidden size {}",
                packing.rows, packing.row_len, self.config.hidden_size
            )));
        }
        let device = embeds.device();
        let layout = StepLayout {
            start: 0,
            position_ids: packing.position_ids(device),
            attn_mask: Some(packing.attention_mask(device)),
            is_causal: false,
        };
        Ok(self.decode(embeds, layout, None))
    }

    /// LM-head logits of hidden states, in f32 for stable softmax/sampling.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden
            .linear::<&Tensor>(&self.lm_head, None)
            .to_kind(Kind::Float)
    }

    /// One decode step of a continuous batch ([`crate::batching`]):
    /// `input_ids[r]` is fed to the sequence in slot `slots[r]` of `cache`.
    /// Returns the logits [rows, vocab].
    pub fn forward_slots(
        &self,
        input_ids: &[i64],
        slots: &[usize],
        cache: &mut SlotCache,
    ) -> Result<Tensor, LlmError> {
        if input_ids.len() != slots.len() || input_ids.is_empty() {
            return Err(LlmError::InvalidRequest(format!(
                "{} tokens for {} slots: a step feeds one token per slot",
                input_ids.len(),
                slots.len()
            )));
        }
        let layout = cache.begin_step(slots)?;
        let ids = Tensor::from_slice(input_ids)
            .to_device(self.device())
            .view([-1, 1]);
        let mut x = self.embed(&ids);
        let (cos, sin) = self.rotary.cos_sin(&layout.position_ids, x.kind());
        let step = Step { layout, cos, sin };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_slots(&x, &step, i, cache);
        }
        cache.commit(slots);
        Ok(self.logits(&self.norm.forward(&x).select(1, 0)))
    }

    /// Ids in, logits of the last position out ([batch, vocab]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor, LlmError> {
        let hidden = self.forward_embeds(&self.embed(input_ids), mask, cache)?;
        Ok(self.logits(&hidden.select(1, -1)))
    }
}

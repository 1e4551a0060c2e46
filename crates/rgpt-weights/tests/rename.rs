//! One model definition, several checkpoint layouts: prefix renames map the
//! original LLaVA-1.5 names onto llava-hf's before loading.
use rgpt_weights::Checkpoint;
use tch::{nn, Device, Kind, Tensor};

fn write(dir: &std::path::Path, tensors: &[(&str, Tensor)]) {
    std::fs::create_dir_all(dir).unwrap();
    Tensor::write_safetensors(tensors, dir.join("model.safetensors")).unwrap();
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rgpt-weights-rename-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn original_llava_names_load_into_llava_hf_paths() {
    let dir = scratch("llava");
    let t = |v: f64| Tensor::full([2], v, (Kind::Float, Device::Cpu));
    write(
        &dir,
        &[
            ("model.mm_projector.0.weight", t(1.0)),
            ("model.mm_projector.2.weight", t(2.0)),
            (
                "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight",
                t(3.0),
            ),
            ("model.layers.0.mlp.up_proj.weight", t(4.0)),
            ("lm_head.weight", t(5.0)),
        ],
    );
    let mut checkpoint = Checkpoint::open(&dir).unwrap();
    checkpoint
        .rename_prefixes(&[
            ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
            ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
            (
                "model.vision_tower.vision_tower.vision_model.",
                "vision_tower.",
            ),
            ("model.", "language_model.model."),
            ("lm_head.", "language_model.lm_head."),
        ])
        .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let names = [
        ("multi_modal_projector.linear_1.weight", 1.0),
        ("multi_modal_projector.linear_2.weight", 2.0),
        ("vision_tower.pre_layrnorm.weight", 3.0),
        ("language_model.model.layers.0.mlp.up_proj.weight", 4.0),
        ("language_model.lm_head.weight", 5.0),
    ];
    let vars: Vec<(Tensor, f64)> = names
        .iter()
        .map(|(name, v)| {
            let path = name.rsplit_once('.').unwrap();
            let mut p = root.clone();
            for segment in path.0.split('.') {
                p = &p / segment;
            }
            (p.zeros_no_train(path.1, &[2]), *v)
        })
        .collect();
    checkpoint.load_into(&vs).unwrap();
    for (var, v) in vars {
        assert_eq!(f64::try_from(var.mean(Kind::Float)).unwrap(), v);
    }
}

#[test]
fn two_names_mapping_to_one_is_an_error() {
    let dir = scratch("clash");
    let t = Tensor::zeros([1], (Kind::Float, Device::Cpu));
    write(&dir, &[("a.x", t.copy()), ("b.x", t)]);
    let mut checkpoint = Checkpoint::open(&dir).unwrap();
    let err = checkpoint
        .rename_prefixes(&[("a.", "c."), ("b.", "c.")])
        .unwrap_err();
    assert!(err.to_string().contains("map to `c.x`"), "{err}");
}

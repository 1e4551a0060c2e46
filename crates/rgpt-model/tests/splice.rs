//! The `<image>` / `<region>` splice: what lands at each position, the labels
//! that keep the loss on answers only, and the errors for mismatched counts.
use rgpt_connector::{Connector, ConnectorConfig};
use rgpt_model::splice::{
    pad_batch, segments_from_ids, splice, Segment, SpliceError, IGNORE_INDEX,
};
use rgpt_region::pool::{mask_pool, PoolStrategy};
use tch::{nn, Device, Kind, Tensor};

const HIDDEN: i64 = 6;
const IMAGE_ID: i64 = 900;
const REGION_ID: i64 = 901;

fn table() -> Tensor {
    tch::manual_seed(3);
    Tensor::randn([50, HIDDEN], (Kind::Float, Device::Cpu))
}

fn rows_equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn placeholders_split_token_ids() {
    let ids = [1, 5, IMAGE_ID, 7, REGION_ID, REGION_ID, 8];
    assert_eq!(
        segments_from_ids(&ids, IMAGE_ID, REGION_ID),
        vec![
            Segment::Text {
                ids: vec![1, 5],
                target: false
            },
            Segment::Image,
            Segment::Text {
                ids: vec![7],
                target: false
            },
            Segment::Region,
            Segment::Region,
            Segment::Text {
                ids: vec![8],
                target: false
            },
        ]
    );
}

#[test]
fn image_regions_and_text_land_where_they_belong() {
    let _guard = tch::no_grad_guard();
    let table = table();
    let embed = |ids: &Tensor| table.index_select(0, ids);
    let image = Tensor::randn([4, HIDDEN], (Kind::Float, Device::Cpu));

    // Regions: mask-pooled refined features through the shared connector,
    // exactly as the model produces them.
    let features = Tensor::randn([1, 8, 4, 4], (Kind::Float, Device::Cpu));
    let masks = Tensor::zeros([2, 4, 4], (Kind::Float, Device::Cpu));
    let _ = masks.get(0).narrow(0, 0, 2).fill_(1.0);
    let _ = masks.get(1).narrow(1, 1, 3).fill_(1.0);
    let pooled = mask_pool(&features, &masks, &[0, 0], PoolStrategy::Auto).unwrap();
    let config: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "vision_hidden_size": 8, "text_hidden_size": HIDDEN
    }))
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let connector = Connector::new(&vs.root(), &config).unwrap();
    let regions = connector.forward(&pooled);

    let segments = vec![
        Segment::Text {
            ids: vec![1, 5, 6],
            target: false,
        },
        Segment::Image,
        Segment::Text {
            ids: vec![7],
            target: false,
        },
        Segment::Region,
        Segment::Text {
            ids: vec![8, 9],
            target: false,
        },
        Segment::Region,
        Segment::Text {
            ids: vec![10, 11, 2],
            target: true,
        },
    ];
    let out = splice(&segments, &embed, std::slice::from_ref(&image), &regions).unwrap();
    assert_eq!(out.embeds.size(), [3 + 4 + 1 + 1 + 2 + 1 + 3, HIDDEN]);
    assert_eq!(out.image_spans, vec![3..7]);
    assert_eq!(out.region_positions, vec![8, 11]);
    assert!(rows_equal(&out.embeds.narrow(0, 3, 4), &image));
    // Recomputed here: the connector over the pooled features of every region.
    let projected = connector.forward(&pooled);
    for (r, &position) in out.region_positions.iter().enumerate() {
        let expected = projected.get(r as i64);
        assert!(
            rows_equal(&out.embeds.get(position as i64), &expected),
            "region {r}"
        );
    }
    let text_positions = [
        (0, 1),
        (1, 5),
        (2, 6),
        (7, 7),
        (9, 8),
        (10, 9),
        (12, 10),
        (13, 11),
        (14, 2),
    ];
    for (position, id) in text_positions {
        assert!(
            rows_equal(&out.embeds.get(position), &table.get(id)),
            "text at {position}"
        );
    }
    let mut labels = vec![IGNORE_INDEX; 12];
    labels.extend([10, 11, 2]);
    assert_eq!(out.labels, labels, "loss only on the answer");
}

#[test]
fn count_mismatches_are_clear_errors() {
    let table = table();
    let embed = |ids: &Tensor| table.index_select(0, ids);
    let two = Tensor::randn([2, HIDDEN], (Kind::Float, Device::Cpu));
    let one_region = vec![
        Segment::Text {
            ids: vec![1],
            target: false,
        },
        Segment::Region,
    ];
    let err = splice(&one_region, &embed, &[], &two).unwrap_err();
    assert!(matches!(
        err,
        SpliceError::RegionCount {
            placeholders: 1,
            regions: 2
        }
    ));
    assert!(err.to_string().contains("use one <region> per region"));

    let no_image = vec![Segment::Text {
        ids: vec![1],
        target: false,
    }];
    let none = Tensor::zeros([0, HIDDEN], (Kind::Float, Device::Cpu));
    let err = splice(&no_image, &embed, &[two.shallow_clone()], &none).unwrap_err();
    assert!(matches!(
        err,
        SpliceError::ImageCount {
            placeholders: 0,
            images: 1
        }
    ));

    let narrow = Tensor::randn([1, HIDDEN + 1], (Kind::Float, Device::Cpu));
    let err = splice(&one_region, &embed, &[], &narrow).unwrap_err();
    assert!(matches!(
        err,
        SpliceError::Width {
            expected: 6,
            found: 7,
            ..
        }
    ));
}

#[test]
fn batches_pad_left_for_generation_and_right_for_training() {
    let table = table();
    let embed = |ids: &Tensor| table.index_select(0, ids);
    let none = Tensor::zeros([0, HIDDEN], (Kind::Float, Device::Cpu));
    let short = vec![Segment::Text {
        ids: vec![1, 2],
        target: true,
    }];
    let long = vec![Segment::Text {
        ids: vec![3, 4, 5, 6],
        target: false,
    }];
    let prompts = [
        splice(&short, &embed, &[], &none).unwrap(),
        splice(&long, &embed, &[], &none).unwrap(),
    ];
    let left = pad_batch(&prompts, true).unwrap();
    assert_eq!(left.embeds.size(), [2, 4, HIDDEN]);
    assert_eq!(left.offsets, vec![2, 0]);
    assert_eq!(
        Vec::<bool>::try_from(left.mask.get(0)).unwrap(),
        vec![false, false, true, true]
    );
    assert_eq!(
        Vec::<i64>::try_from(left.labels.get(0)).unwrap(),
        vec![IGNORE_INDEX, IGNORE_INDEX, 1, 2]
    );
    assert!(rows_equal(
        &left.embeds.get(0).narrow(0, 2, 2),
        &prompts[0].embeds
    ));
    let right = pad_batch(&prompts, false).unwrap();
    assert_eq!(
        Vec::<bool>::try_from(right.mask.get(0)).unwrap(),
        vec![true, true, false, false]
    );
    assert_eq!(
        Vec::<i64>::try_from(right.labels.get(0)).unwrap(),
        vec![1, 2, IGNORE_INDEX, IGNORE_INDEX]
    );
    assert_eq!(
        f64::try_from(right.embeds.get(0).narrow(0, 2, 2).abs().sum(Kind::Float)).unwrap(),
        0.0
    );
}

#[test]
fn loss_counts_only_answer_tokens() {
    use rgpt_model::loss::causal_lm_loss;
    tch::manual_seed(5);
    let logits = Tensor::randn([2, 5, 7], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[
        IGNORE_INDEX,
        IGNORE_INDEX,
        3,
        4,
        IGNORE_INDEX, //
        IGNORE_INDEX,
        1,
        IGNORE_INDEX,
        IGNORE_INDEX,
        6,
    ])
    .view([2, 5]);
    // By hand: position t predicts label t + 1; counted pairs are
    // (0,1)->3, (0,2)->4, (1,0)->1, (1,3)->6.
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let nll =
        |b: i64, t: i64, label: i64| -f64::try_from(log_probs.get(b).get(t).get(label)).unwrap();
    let expected = (nll(0, 1, 3) + nll(0, 2, 4) + nll(1, 0, 1) + nll(1, 3, 6)) / 4.0;
    let loss = f64::try_from(causal_lm_loss(&logits, &labels)).unwrap();
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    let nothing = Tensor::full([2, 5], IGNORE_INDEX, (Kind::Int64, Device::Cpu));
    assert_eq!(
        f64::try_from(causal_lm_loss(&logits, &nothing)).unwrap(),
        0.0
    );
}

#[test]
fn loss_from_hidden_states_equals_the_loss_from_all_logits() {
    use rgpt_model::loss::{causal_lm_loss, causal_lm_loss_from_hidden};
    tch::manual_seed(6);
    let hidden = Tensor::randn([3, 6, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let head = Tensor::randn([9, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let i = IGNORE_INDEX;
    // Answers in the middle, at the end and (third row) nowhere; a label on
    // the first position is never predicted and must not count.
    let labels =
        Tensor::from_slice(&[5, i, 2, 8, i, i, i, i, i, 1, 0, 3, i, i, i, i, i, i]).view([3, 6]);
    let grads = |loss: Tensor| {
        let grads = Tensor::run_backward(&[&loss], &[&hidden, &head], false, false);
        (f64::try_from(&loss).unwrap(), grads)
    };
    let (full, full_grads) = grads(causal_lm_loss(&hidden.matmul(&head.tr()), &labels));
    let (gathered, counted) =
        causal_lm_loss_from_hidden(&hidden, &labels, |h| h.matmul(&head.tr()));
    // Six labels, of which the first position's is never predicted.
    assert_eq!(counted, 5);
    let (gathered, gathered_grads) = grads(gathered);
    assert!((full - gathered).abs() < 1e-6, "{full} vs {gathered}");
    for (a, b) in full_grads.iter().zip(&gathered_grads) {
        let diff = f64::try_from((a - b).abs().max()).unwrap();
        assert!(diff < 1e-6, "gradients differ by {diff}");
    }
    // No counted token: 0, and a graph that still runs backward.
    let nothing = Tensor::full([3, 6], IGNORE_INDEX, (Kind::Int64, Device::Cpu));
    let (zero, counted) = causal_lm_loss_from_hidden(&hidden, &nothing, |h| h.matmul(&head.tr()));
    assert_eq!(counted, 0);
    let (zero, zero_grads) = grads(zero);
    assert_eq!(zero, 0.0);
    assert_eq!(
        f64::try_from(zero_grads[0].abs().sum(Kind::Float)).unwrap(),
        0.0
    );
}

//! `DataParallel::all_reduce_gradients` on a real 2-rank Gloo group (two
//! threads of this process): gradients are summed whatever the bucket
//! size and dtype; a variable only one rank used gets that rank's
//! gradient on both; one no rank used keeps no gradient, as in one
//! process.
use std::net::TcpListener;
use std::time::Duration;

use rgpt_dist::{Backend, DistEnv, ProcessGroup};
use rgpt_train::data_parallel::DataParallel;
use rgpt_train::zero::ShardedAdamW;
use tch::{Device, Kind, Tensor};

fn group(rank: usize, port: u16) -> ProcessGroup {
    let env = DistEnv {
        rank,
        world_size: 2,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    };
    ProcessGroup::init(&env, Backend::Gloo, Duration::from_secs(60)).unwrap()
}

/// Variables: two f32 ones both ranks use, a bf16 one, one only rank 0
/// uses and one nobody uses. Returns them and the gradients they got
/// here, before any reduction.
fn variables(rank: usize) -> (Vec<Tensor>, Vec<Option<Tensor>>) {
    let opts = (Kind::Float, Device::Cpu);
    let make = |n: i64, kind: Kind| {
        Tensor::arange(n, opts)
            .to_kind(kind)
            .set_requires_grad(true)
    };
    let vars = vec![
        make(5, Kind::Float),
        make(300, Kind::Float),
        make(7, Kind::BFloat16),
        make(3, Kind::Float),
        make(4, Kind::Float),
    ];
    let r = rank as f64 + 1.0;
    let mut loss = (&vars[0] * r).sum(Kind::Float)
        + (&vars[1] * &vars[1] * r).sum(Kind::Float)
        + (vars[2].to_kind(Kind::Float) * (2.0 * r)).sum(Kind::Float);
    if rank == 0 {
        loss += (&vars[3] * &vars[3] * 3.0).sum(Kind::Float);
    }
    loss.backward();
    let grads = vars
        .iter()
        .map(|v| {
            let g = v.grad();
            g.defined().then(|| g.copy())
        })
        .collect();
    (vars, grads)
}

#[test]
fn gradients_are_summed_across_ranks() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // 1 KiB buckets: the 300-element variable fills one alone, and the
    // bf16 one needs a bucket of its own dtype.
    let results: Vec<_> = (0..2)
        .map(|rank| {
            std::thread::spawn(move || {
                let dist = DataParallel::new(group(rank, port), 1.0 / 1024.0);
                let (vars, before) = variables(rank);
                dist.all_reduce_gradients(&vars).unwrap();
                let after: Vec<Option<Tensor>> = vars
                    .iter()
                    .map(|v| {
                        let g = v.grad();
                        g.defined().then(|| g.copy())
                    })
                    .collect();
                (before, after)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (before0, after0) = &results[0];
    let (before1, after1) = &results[1];
    for i in 0..3 {
        let sum = before0[i].as_ref().unwrap() + before1[i].as_ref().unwrap();
        for after in [after0, after1] {
            let got = after[i].as_ref().unwrap();
            assert_eq!(got.kind(), sum.kind());
            assert!(got.allclose(&sum, 1e-6, 1e-6, false), "variable {i}");
        }
    }
    // Only rank 0 used variable 3: both ranks now hold its gradient.
    assert!(before1[3].is_none());
    for after in [after0, after1] {
        assert!(after[3]
            .as_ref()
            .unwrap()
            .equal(before0[3].as_ref().unwrap()));
    }
    // Nobody used variable 4: no gradient anywhere, so AdamW skips it.
    assert!(after0[4].is_none() && after1[4].is_none());
}

/// Variables of every kind the sharded optimiser meets: f32, bf16 (with
/// an f32 master), one no rank uses; 319 weights, so 3 shards need padding.
fn model() -> Vec<(String, Tensor)> {
    let opts = (Kind::Float, Device::Cpu);
    [
        (5, Kind::Float),
        (300, Kind::Float),
        (7, Kind::BFloat16),
        (7, Kind::Float),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(n, kind))| {
        let values = (Tensor::arange(n, opts) * 0.1 - 1.0).to_kind(kind);
        (format!("v{i}"), values.set_requires_grad(true))
    })
    .collect()
}

/// Gives every variable but the last the gradient `scale` times a fixed
/// one that changes with `step`.
fn shallow(vars: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    vars.iter()
        .map(|(n, v)| (n.clone(), v.shallow_clone()))
        .collect()
}

fn set_gradients(vars: &[(String, Tensor)], step: i64, scale: f64) {
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (i, (_, v)) in vars.iter().take(vars.len() - 1).enumerate() {
        let n = v.numel() as i64;
        let g = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * (0.3 + step as f64) - i as f64)
            .sin()
            * scale;
        loss += (v.to_kind(Kind::Float) * g).sum(Kind::Float);
    }
    loss.backward();
}

#[test]
fn zero_1_takes_adamw_steps_and_saves_its_state() {
    let config = rgpt_train::optimizer::AdamWConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    // One process: AdamW with the whole gradient, clipped to norm 5.
    let vars = model();
    let mut adamw = rgpt_train::optimizer::AdamW::new(shallow(&vars), config);
    for step in 0..3 {
        adamw.zero_grad();
        set_gradients(&vars, step, 1.0);
        adamw.clip_grad_norm(5.0);
        adamw.step(1e-2);
    }
    let (want_state, _) = adamw.state();

    // Three ranks, each with a share of the gradient (halves and quarters:
    // their sum is exact).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let results: Vec<_> = (0..3)
        .map(|rank| {
            std::thread::spawn(move || {
                let env = DistEnv {
                    rank,
                    world_size: 3,
                    local_rank: rank,
                    master_addr: "127.0.0.1".into(),
                    master_port: port,
                };
                let group = ProcessGroup::init(&env, Backend::Gloo, Duration::from_secs(60));
                // 1 KiB buckets: 255 weights each, so two buckets, and
                // variables cut across them.
                let dist = DataParallel::new(group.unwrap(), 1.0 / 1024.0);
                let vars = model();
                let mut sharded = ShardedAdamW::new(shallow(&vars), config, &dist);
                for step in 0..3 {
                    sharded.zero_grad();
                    set_gradients(&vars, step, [0.5, 0.25, 0.25][rank]);
                    sharded.step(&dist, 1e-2, 5.0).unwrap();
                }
                let (state, steps) = sharded.state(&dist).unwrap();
                let values: Vec<Tensor> = vars.iter().map(|(_, v)| v.detach().copy()).collect();
                (values, state, steps)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for (rank, (values, state, steps)) in results.iter().enumerate() {
        assert_eq!(*steps, 3);
        for ((name, want), got) in vars.iter().zip(values) {
            let diff = f64::try_from(
                (want.to_kind(Kind::Float) - got.to_kind(Kind::Float))
                    .abs()
                    .max(),
            )
            .unwrap();
            assert!(diff <= 1e-6, "{name}: {diff}");
        }
        // The unused variable did not move.
        assert!(values[3].equal(&model()[3].1));
        // Rank 0 writes checkpoints and holds the gathered state.
        if rank > 0 {
            assert!(state.is_empty());
            continue;
        }
        let names = |s: &[(String, Tensor)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(state), names(&want_state));
        for ((name, want), (_, got)) in want_state.iter().zip(state) {
            // AdamW clips a bf16 gradient in bf16, the sharded optimiser in
            // f32: the bf16 variable's moments differ by bf16 rounding.
            let (rtol, atol) = if name.ends_with("v2") {
                (1e-2, 1e-3)
            } else {
                (1e-5, 1e-7)
            };
            assert!(
                want.allclose(got, rtol, atol, false),
                "{name}: {want} {got}"
            );
        }
    }
}

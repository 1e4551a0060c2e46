//! `DataParallel::all_reduce_gradients` on a real 2-rank Gloo group (two
//! threads of this process): gradients are summed whatever the bucket
//! size and dtype; a variable only one rank used gets that rank's
//! gradient on both; one no rank used keeps no gradient, as in one
//! process.
use std::net::TcpListener;
use std::time::Duration;

use rgpt_dist::{Backend, DistEnv, ProcessGroup};
use rgpt_train::data_parallel::DataParallel;
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

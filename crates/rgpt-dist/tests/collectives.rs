//! Real processes on 127.0.0.1, each a rank of a Gloo group: every
//! collective for 2 and 3 ranks and f32/bf16/i64, and the faults (a rank
//! that dies or hangs, a port in use, no server) end in errors, not hangs.
//!
//! Its own harness (`harness = false`): run plainly it is the parent, which
//! runs this binary again as each rank with the launcher's variables and
//! `RGPT_DIST_CASE` naming what the rank does.
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rgpt_dist::{Backend, DistEnv, DistError, ProcessGroup, ReduceOp, TcpStore};
use tch::{Device, Kind, Tensor};

const CASE: &str = "RGPT_DIST_CASE";

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        let env = DistEnv::from_env()
            .expect("launcher variables")
            .expect("a rank");
        if let Err(message) = rank(&case, &env) {
            eprintln!("rank {}: {message}", env.rank);
            std::process::exit(1);
        }
        return;
    }
    let tests: &[(&str, fn())] = &[
        ("every collective on 2 ranks", || collectives(2)),
        ("every collective on 3 ranks", || collectives(3)),
        ("a rank that dies", a_rank_that_dies),
        ("a rank that hangs", a_rank_that_hangs),
        ("a port in use", a_port_in_use),
        ("no rendezvous server", no_rendezvous_server),
        ("the NCCL path is built", nccl_is_built),
    ];
    // On a GPU machine (scripts/gpu_check.sh sets RGPT_NCCL_GPUS to the
    // GPUs present): every collective over NCCL, one rank per GPU.
    let gpus: Option<usize> = std::env::var("RGPT_NCCL_GPUS").ok().map(|n| {
        n.parse()
            .ok()
            .filter(|&n| n >= 1)
            .expect("RGPT_NCCL_GPUS is the number of GPUs to use, at least 1")
    });
    for (name, test) in tests {
        run(name, test);
    }
    if let Some(gpus) = gpus {
        run("every collective over NCCL, one rank per GPU", || {
            collectives_on("collectives-nccl", gpus)
        });
    }
}

fn run(name: &str, test: impl Fn()) {
    let started = Instant::now();
    test();
    println!(
        "test {name} ... ok ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn spawn(case: &str, world: usize, port: u16, rank: usize) -> std::process::Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .env(CASE, case)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a rank")
}

fn run_ranks(case: &str, world: usize) -> Vec<Output> {
    let port = free_port();
    let children: Vec<_> = (0..world).map(|r| spawn(case, world, port, r)).collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("a rank's output"))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn collectives(world: usize) {
    collectives_on("collectives", world)
}

fn collectives_on(case: &str, world: usize) {
    for (rank, output) in run_ranks(case, world).iter().enumerate() {
        assert!(
            output.status.success(),
            "rank {rank} of {world}: {}",
            stderr(output)
        );
    }
}

fn a_rank_that_dies() {
    let started = Instant::now();
    let outputs = run_ranks("dies", 2);
    let survivor = &outputs[0];
    assert!(!survivor.status.success());
    let message = stderr(survivor);
    assert!(
        message.starts_with("rank 0: rank 0 of 2: all_reduce: "),
        "{message}"
    );
    // The dead rank is named, from its heartbeat.
    assert!(
        message
            .trim_end()
            .ends_with("; rank 1 is gone (no heartbeat for 2.5 s)"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{message}");
}

fn a_rank_that_hangs() {
    let port = free_port();
    let mut hanging = spawn("hangs", 2, port, 1);
    let started = Instant::now();
    let output = spawn("hangs", 2, port, 0)
        .wait_with_output()
        .expect("rank 0");
    let _ = hanging.kill();
    let _ = hanging.wait();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.starts_with("rank 0: rank 0 of 2: all_reduce: "),
        "{message}"
    );
    assert!(
        message.trim_end().ends_with(
            "every other rank is alive: one of them is stuck or slower than the timeout"
        ),
        "{message}"
    );
    // The group's timeout is 3 s.
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
}

fn a_port_in_use() {
    let holder = TcpListener::bind("0.0.0.0:0").expect("a port");
    let port = holder.local_addr().unwrap().port();
    let error = TcpStore::new("127.0.0.1", port, true, 2, Duration::from_secs(2))
        .err()
        .expect("the port is taken");
    assert!(
        matches!(error, DistError::PortInUse { port: p, .. } if p == port),
        "{error}"
    );
    assert!(error.to_string().contains("already in use"), "{error}");
}

fn no_rendezvous_server() {
    let started = Instant::now();
    let error = TcpStore::new("127.0.0.1", free_port(), false, 2, Duration::from_secs(2))
        .err()
        .expect("nobody serves the store");
    assert!(
        error.to_string().starts_with("rendezvous at 127.0.0.1:"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{error}");
}

fn nccl_is_built() {
    // Where libtorch has CUDA (the PyPI wheel does), the NCCL path must
    // have compiled: CI has no GPU, but compiles it.
    // (Whether the libtorch built against has CUDA is recorded at build
    // time: this binary also runs on the GPU machine.)
    assert_eq!(
        rgpt_dist::NCCL_BUILT,
        env!("RGPT_DIST_LIBTORCH_HAS_CUDA") == "true",
        "NCCL built: {} (libtorch at {})",
        rgpt_dist::NCCL_BUILT,
        env!("RGPT_DIST_LIBTORCH_LIB")
    );
}

// ---- what each rank does ----

fn rank(case: &str, env: &DistEnv) -> Result<(), String> {
    let timeout = Duration::from_secs(if case == "hangs" { 3 } else { 60 });
    let (backend, device) = match case {
        "collectives-nccl" => (Backend::Nccl, Device::Cuda(env.local_rank)),
        _ => (Backend::Gloo, Device::Cpu),
    };
    let group = ProcessGroup::init(env, backend, timeout).map_err(|e| e.to_string())?;
    match case {
        "collectives" | "collectives-nccl" => {
            for kind in [Kind::Float, Kind::BFloat16, Kind::Int64] {
                every_collective(&group, kind, device).map_err(|e| format!("{kind:?}: {e}"))?;
            }
            Ok(())
        }
        "dies" if env.rank == 1 => std::process::exit(3),
        "hangs" if env.rank == 1 => {
            std::thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        "dies" | "hangs" => {
            // Give the other rank time to be gone.
            std::thread::sleep(Duration::from_millis(500));
            let mut t = Tensor::ones([4], (Kind::Float, Device::Cpu));
            group
                .all_reduce(&mut t, ReduceOp::Sum)
                .map_err(|e| e.to_string())?;
            Err("all_reduce succeeded without its peer".into())
        }
        other => Err(format!("unknown case {other}")),
    }
}

fn every_collective(group: &ProcessGroup, kind: Kind, device: Device) -> Result<(), String> {
    let (rank, world) = (group.rank() as i64, group.world_size() as i64);
    let options = (kind, device);
    let base = Tensor::arange(6, options).view([2, 3]);
    let expect = |what: &str, got: &Tensor, want: &Tensor| -> Result<(), String> {
        if got.kind() != kind || got.size() != want.size() || !got.equal(want) {
            return Err(format!("{what}: got {got} want {want}"));
        }
        Ok(())
    };
    let e = |e: DistError| e.to_string();

    // Sum of base * (rank + 1) over ranks: base * world (world + 1) / 2.
    let mut t = &base * (rank + 1);
    group.all_reduce(&mut t, ReduceOp::Sum).map_err(e)?;
    expect("sum", &t, &(&base * (world * (world + 1) / 2)))?;

    let mut t = &base + rank;
    group.all_reduce(&mut t, ReduceOp::Max).map_err(e)?;
    expect("max", &t, &(&base + (world - 1)))?;

    let mut t = (&base * world).to_kind(kind) + rank * 2;
    let avg = group.all_reduce(&mut t, ReduceOp::Avg);
    if kind == Kind::Int64 {
        let message = avg.err().ok_or("avg of integers was accepted")?.to_string();
        if !message.contains("avg needs a floating-point tensor") {
            return Err(message);
        }
    } else {
        avg.map_err(e)?;
        expect("avg", &t, &((&base * world) + (world - 1)))?;
    }

    let root = world - 1;
    let mut t = Tensor::full([5], rank, options);
    group.broadcast(&mut t, root as usize).map_err(e)?;
    expect("broadcast", &t, &Tensor::full([5], root, options))?;

    let gathered = group.all_gather(&(&base + rank * 10)).map_err(e)?;
    if gathered.len() != world as usize {
        return Err(format!("all_gather gave {} tensors", gathered.len()));
    }
    for (k, got) in gathered.iter().enumerate() {
        expect("all_gather", got, &(&base + k as i64 * 10))?;
    }

    // Rank r contributes rows valued r + row index; rank r gets rows
    // [2r, 2r + 2) of the sum.
    let rows = Tensor::arange(2 * world, options)
        .view([2 * world, 1])
        .repeat([1, 3]);
    let mine = group
        .reduce_scatter(&(&rows + rank), ReduceOp::Sum)
        .map_err(e)?;
    let all = &rows * world + world * (world - 1) / 2;
    expect("reduce_scatter", &mine, &all.narrow(0, 2 * rank, 2))?;

    group.barrier().map_err(e)
}

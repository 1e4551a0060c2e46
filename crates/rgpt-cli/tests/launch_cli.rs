//! Data-parallel training through real processes on 127.0.0.1 (Gloo):
//! `rgpt launch --nproc 2 -- train` takes the steps one process with the
//! same global batch takes, resumes exactly after Ctrl-C, and ends with an
//! error, not a hang, when a rank dies or the ranks disagree.
mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, ok, rgpt};
use tch::Tensor;

/// A directory with a 16-image synthetic world plus text-only
/// conversations (so on some steps a rank's share has no image and its
/// vision side no gradient), and `NAME.yaml` configs made by [`config`].
/// A test's folder, removed when the test passes (kept to look at when it
/// fails).
struct World(PathBuf);

impl std::ops::Deref for World {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn world(tag: &str) -> World {
    let dir = std::env::temp_dir().join(format!("rgpt-launch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ok(&rgpt(&[
        "data",
        "synth",
        "--out",
        dir.join("world").to_str().unwrap(),
        "--images",
        "16",
        "--image-size",
        "64",
    ]));
    let text: String = (0..8)
        .map(|i| {
            format!(
                "{{\"id\":\"text-{i}\",\"task\":\"text\",\"conversations\":[\
                 {{\"from\":\"human\",\"value\":\"what is {i} plus one?\"}},\
                 {{\"from\":\"gpt\",\"value\":\"it is {}\"}}]}}\n",
                i + 1
            )
        })
        .collect();
    std::fs::write(dir.join("text.jsonl"), text).unwrap();
    World(dir)
}

/// Writes `DIR/NAME.yaml`: a tiny model from nothing, fine-tuned on the
/// world with a global batch of 4, into `DIR/run-NAME`.
fn config(dir: &Path, name: &str, micro_batch: usize, tail: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "model: {{tiny: {{image_size: 64}}}}\n\
             data:\n  files: [{{path: world/synth-shape.jsonl}}, {{path: world/synth-rec.jsonl}}, \
             {{path: text.jsonl}}]\n  image_root: world\n\
             stage: finetune\nlr: 0.001\nglobal_batch: 4\nmicro_batch: {micro_batch}\n\
             output_dir: run-{name}\nloader_workers: 1\nseed: 3\ndevice: cpu\n{tail}"
        ),
    )
    .unwrap();
    path
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rgpt"));
    command
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn launch(config: &Path, extra: &[&str]) -> Command {
    let port = free_port().to_string();
    let mut args = vec!["launch", "--nproc", "2", "--master-port", &port, "--"];
    args.extend(["train", "--config", config.to_str().unwrap()]);
    args.extend(extra);
    command(&args)
}

/// One rank of a 2-rank run started by hand, as srun or torchrun would.
fn rank(config: &Path, rank: usize, port: u16) -> Child {
    command(&["train", "--config", config.to_str().unwrap()])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .spawn()
        .unwrap()
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["loss"].as_f64().unwrap()
        })
        .collect()
}

fn weights(model: &Path) -> Vec<(String, Tensor)> {
    let mut weights = Tensor::read_safetensors(model.join("model.safetensors")).unwrap();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    weights
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn wait_for_steps(run: &Path, steps: usize, child: &mut Child) {
    let started = Instant::now();
    let logged = || {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while logged() < steps {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before step {steps}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts two runs logged the same losses (within 1e-5 relative) and
/// saved the same weights (within 1e-5).
fn assert_same_run(a: &Path, b: &Path) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len());
    for (step, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "step {}: {} {x}, {} {y}",
            step + 1,
            a.display(),
            b.display()
        );
    }
    let (wa, wb) = (weights(&a.join("model")), weights(&b.join("model")));
    assert_eq!(wa.len(), wb.len());
    for ((name, x), (other, y)) in wa.iter().zip(&wb) {
        assert_eq!(name, other);
        let diff = f64::try_from((x - y).abs().max()).unwrap();
        assert!(diff <= 1e-5, "{name}: weights differ by {diff}");
    }
}

#[test]
fn two_ranks_take_the_steps_of_one_process() {
    let dir = world("same");
    // The same config (micro-batches of 1, global batch 4; only the output
    // folders differ) trained by one process, which then takes 4
    // micro-batches a step, and by two ranks taking 2 each, with AdamW on
    // every rank (DDP) and with its state sharded (ZeRO-1).
    let tail = |zero: u8| {
        format!("steps: 8\ndistributed: {{backend: gloo, timeout_s: 120, zero: {zero}}}\n")
    };
    let one = config(&dir, "one", 1, &tail(0));
    ok(&command(&["train", "--config", one.to_str().unwrap()])
        .output()
        .unwrap());
    assert_eq!(losses(&dir.join("run-one")).len(), 8);
    // One process taking each step's 4 samples in one forward pass (batch
    // 2B where each rank takes B) takes the same steps.
    let whole = config(&dir, "whole", 2, &tail(0));
    ok(&command(&["train", "--config", whole.to_str().unwrap()])
        .output()
        .unwrap());
    assert_same_run(&dir.join("run-one"), &dir.join("run-whole"));
    for zero in [0, 1] {
        let name = format!("zero{zero}");
        let two = config(&dir, &name, 1, &tail(zero));
        let launched = launch(&two, &[]).output().unwrap();
        let out = ok(&launched);
        // Rank 0 reports; each line carries its rank.
        assert!(out.contains("[rank 0] trained model written to"), "{out}");
        assert!(!out.contains("[rank 1]"), "{out}");
        assert!(stderr(&launched).contains("[rank 0] step 8/8: loss"));
        assert_same_run(&dir.join("run-one"), &dir.join(format!("run-{name}")));
        // The second rank wrote nothing of the run's.
        let entries: Vec<String> = std::fs::read_dir(dir.join(format!("run-{name}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!entries.iter().any(|e| e.contains("rank1")), "{entries:?}");
    }
}

/// torchrun starts the ranks as `rgpt launch` does: its variables are
/// torchrun's.
#[test]
fn torchrun_starts_the_ranks_too() {
    let dir = world("torchrun");
    let tail = "steps: 4\ndistributed: {backend: gloo, timeout_s: 120}\n";
    let (one, two) = (config(&dir, "one", 1, tail), config(&dir, "two", 1, tail));
    ok(&command(&["train", "--config", one.to_str().unwrap()])
        .output()
        .unwrap());
    let torchrun = common::root().join(".venv/bin/torchrun");
    let output = Command::new(&torchrun)
        .args(["--nproc-per-node", "2", "--master-port"])
        .arg(free_port().to_string())
        .arg("--no-python")
        .arg(env!("CARGO_BIN_EXE_rgpt"))
        .args(["train", "--config"])
        .arg(&two)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", torchrun.display()));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_same_run(&dir.join("run-one"), &dir.join("run-two"));
}

/// Interrupts `rgpt launch --nproc 2 -- train --config CONFIG` as Ctrl-C in
/// a terminal would (the launcher and every rank get SIGINT) after at least
/// two steps; returns how many steps were logged.
fn interrupt(config: &Path, run: &Path) -> usize {
    let mut child = launch(config, &[]).process_group(0).spawn().unwrap();
    wait_for_steps(run, 2, &mut child);
    let group = format!("-{}", child.id());
    assert!(Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success());
    let interrupted = child.wait_with_output().unwrap();
    let message = stderr(&interrupted);
    assert!(!interrupted.status.success());
    assert!(
        message.contains("[rank 0] interrupted after step"),
        "{message}"
    );
    assert!(message.contains("--resume"), "{message}");
    losses(run).len()
}

#[test]
fn a_two_rank_run_resumed_after_ctrl_c_equals_an_uninterrupted_one() {
    let dir = world("resume");
    let tail = "steps: 60\ncheckpoint_every: 1000\n\
                distributed: {backend: gloo, timeout_s: 120}\n";
    let whole = config(&dir, "whole", 1, tail);
    let cut = config(&dir, "cut", 1, tail);
    ok(&launch(&whole, &[]).output().unwrap());

    let logged = interrupt(&cut, &dir.join("run-cut"));
    assert!((2..60).contains(&logged), "{logged} steps before the stop");

    let resumed = launch(&cut, &["--resume"]).output().unwrap();
    assert!(
        stderr(&resumed).contains(&format!("[rank 0] resuming at step {logged} of 60")),
        "{}",
        stderr(&resumed)
    );
    ok(&resumed);
    assert_eq!(losses(&dir.join("run-whole")), losses(&dir.join("run-cut")));
    for ((name, a), (_, b)) in weights(&dir.join("run-whole/model"))
        .iter()
        .zip(&weights(&dir.join("run-cut/model")))
    {
        assert!(a.equal(b), "{name} differs after the resume");
    }
}

/// ZeRO-1's checkpoint holds the whole optimiser state: a 2-rank run
/// stopped part way continues in one process as if it had been one
/// process all along.
#[test]
fn a_zero_1_run_resumes_in_one_process() {
    let dir = world("zero-resume");
    let one = config(&dir, "one", 2, "steps: 60\ncheckpoint_every: 1000\n");
    ok(&command(&["train", "--config", one.to_str().unwrap()])
        .output()
        .unwrap());
    let tail = "steps: 60\ncheckpoint_every: 1000\n\
                distributed: {backend: gloo, timeout_s: 120, zero: 1}\n";
    let sharded = config(&dir, "sharded", 1, tail);
    let logged = interrupt(&sharded, &dir.join("run-sharded"));
    assert!((2..60).contains(&logged), "{logged} steps before the stop");
    let alone = dir.join("alone.yaml");
    let text = std::fs::read_to_string(&sharded).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("distributed:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&alone, text).unwrap();
    let resumed = command(&["train", "--config", alone.to_str().unwrap(), "--resume"])
        .output()
        .unwrap();
    ok(&resumed);
    assert!(stderr(&resumed).contains(&format!("resuming at step {logged} of 60")));
    assert_same_run(&dir.join("run-one"), &dir.join("run-sharded"));
}

#[test]
fn a_killed_rank_ends_the_run_with_an_error() {
    let dir = world("killed");
    let config = config(
        &dir,
        "killed",
        1,
        "steps: 100000\ndistributed: {backend: gloo, timeout_s: 20}\n",
    );
    let port = free_port();
    let mut first = rank(&config, 0, port);
    let mut second = rank(&config, 1, port);
    wait_for_steps(&dir.join("run-killed"), 2, &mut first);
    second.kill().unwrap();
    let _ = second.wait();
    let started = Instant::now();
    let output = first.wait_with_output().unwrap();
    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(
        message.contains("error: distributed: rank 0 of 2: "),
        "{message}"
    );
    assert!(message.contains("rank 1 is gone"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(60), "{message}");
}

#[test]
fn ranks_that_read_different_configs_fail_at_the_start() {
    let dir = world("differ");
    let distributed = "steps: 4\ndistributed: {backend: gloo, timeout_s: 20}\n";
    let a = config(&dir, "differ", 1, distributed);
    let b = dir.join("other.yaml");
    std::fs::write(
        &b,
        std::fs::read_to_string(&a)
            .unwrap()
            .replace("lr: 0.001", "lr: 0.002"),
    )
    .unwrap();
    let port = free_port();
    let (first, second) = (rank(&a, 0, port), rank(&b, 1, port));
    for (index, child) in [first, second].into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains("config differs from rank") && message.contains("in `lr`"),
            "rank {index}: {message}"
        );
    }
    assert!(!dir.join("run-differ/metrics.jsonl").exists());
}

#[test]
fn launcher_variables_without_a_distributed_run_are_refused() {
    let dir = world("refused");
    let plain = config(&dir, "plain", 1, "steps: 2\n");
    let output = command(&["train", "--config", plain.to_str().unwrap()])
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("RANK: WORLD_SIZE is set but RANK is not"),
        "{}",
        stderr(&output)
    );
    // Launched, but the config has no `distributed` section: the ranks
    // would train alone and write over each other.
    let output = launch(&plain, &[]).output().unwrap();
    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("no `distributed` section"), "{message}");
    assert!(
        message.contains("error: rank ") && message.contains("the other ranks were stopped"),
        "{message}"
    );
    assert!(!dir.join("run-plain/metrics.jsonl").exists());
}

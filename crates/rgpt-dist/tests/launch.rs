//! `launch` as torchrun behaves: each rank gets its variables, its lines
//! come back tagged with its rank, and a failing rank stops the others and
//! is named.
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use rgpt_dist::{launch, DistError, LaunchConfig, Stream};

fn config(nproc: usize, nnodes: usize, node_rank: usize) -> LaunchConfig {
    LaunchConfig {
        nproc,
        nnodes,
        node_rank,
        master_addr: "10.1.2.3".into(),
        master_port: 29555,
    }
}

fn sh(script: &str) -> Vec<OsString> {
    vec!["-c".into(), script.into()]
}

#[test]
fn every_rank_gets_its_variables_and_its_lines_come_back_tagged() {
    let mut lines = Vec::new();
    launch(
        Path::new("sh"),
        &sh(
            "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $GROUP_RANK \
             $MASTER_ADDR $MASTER_PORT $OMP_NUM_THREADS; echo oops >&2",
        ),
        &config(2, 3, 1),
        |rank, stream, line| lines.push((rank, stream, line.to_string())),
    )
    .unwrap();
    lines.sort();
    let want = |rank: usize, local: usize| format!("{rank} 6 {local} 2 1 10.1.2.3 29555 1");
    let omp = std::env::var("OMP_NUM_THREADS").ok();
    let mut expected = vec![
        (2, Stream::Stdout, want(2, 0)),
        (2, Stream::Stderr, "oops".to_string()),
        (3, Stream::Stdout, want(3, 1)),
        (3, Stream::Stderr, "oops".to_string()),
    ];
    if let Some(omp) = omp {
        // A value already set is kept, not replaced by 1.
        for line in &mut expected {
            if line.1 == Stream::Stdout {
                line.2 = line.2.replace(" 29555 1", &format!(" 29555 {omp}"));
            }
        }
    }
    expected.sort();
    assert_eq!(lines, expected);
}

#[test]
fn a_failing_rank_stops_the_others_and_is_named() {
    let started = Instant::now();
    let error = launch(
        Path::new("sh"),
        &sh("if [ $RANK = 1 ]; then exit 7; fi; sleep 60"),
        &config(3, 1, 0),
        |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&error, DistError::RankFailed { rank: 1, status } if status == "exit status 7"),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "rank 1 failed (exit status 7); the other ranks were stopped"
    );
    // The others were stopped (SIGTERM), not waited for.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn carriage_returns_split_lines() {
    let mut lines = Vec::new();
    launch(
        Path::new("sh"),
        &sh("printf 'a\\rb\\n'"),
        &config(1, 1, 0),
        |_, _, line| lines.push(line.to_string()),
    )
    .unwrap();
    assert_eq!(lines, ["a", "b"]);
}

#[test]
fn bad_arguments_are_refused() {
    let error = |c: LaunchConfig| {
        launch(Path::new("true"), &[], &c, |_, _, _| {})
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error(config(0, 1, 0)),
        "--nproc and --nnodes must be at least 1"
    );
    assert_eq!(
        error(config(1, 2, 2)),
        "--node-rank 2 is not below --nnodes 2"
    );
    let missing = launch(
        Path::new("/nonexistent/program"),
        &[],
        &config(1, 1, 0),
        |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot start /nonexistent/program:"),
        "{missing}"
    );
}

//! `rgpt launch --nproc N [--nnodes M --node-rank R --master-addr A
//! --master-port P] -- train --config F`: this machine's ranks of a run, as
//! torchrun starts them (rgpt_dist::launch), each line tagged with its rank.
use std::ffi::OsString;

use clap::Args;
use rgpt_dist::{LaunchConfig, Stream};

#[derive(Args)]
pub struct LaunchArgs {
    /// Processes on this machine: one per GPU (or CPU share).
    #[arg(long, visible_alias = "nproc-per-node", default_value_t = 1)]
    nproc: usize,
    /// Machines in the run.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This machine's number among them (0 serves the rendezvous).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of node 0, reachable from every node.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    #[arg(long, default_value_t = rgpt_dist::DEFAULT_PORT)]
    master_port: u16,
    /// The rgpt command each rank runs, after `--` (e.g. `-- train --config F`).
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let rgpt = std::env::current_exe()?;
    let config = LaunchConfig {
        nproc: args.nproc,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        master_addr: args.master_addr,
        master_port: args.master_port,
    };
    // Ctrl-C reaches every rank (they share the terminal's process group):
    // each stops after the step in progress, checkpointed, and launch waits
    // for them instead of leaving them behind.
    ctrlc::set_handler(|| {})?;
    rgpt_dist::launch(
        &rgpt,
        &args.command,
        &config,
        |rank, stream, line| match stream {
            Stream::Stdout => println!("[rank {rank}] {line}"),
            Stream::Stderr => eprintln!("[rank {rank}] {line}"),
        },
    )?;
    Ok(())
}

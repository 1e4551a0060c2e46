//! `rgpt plot RUN_DIR [--out DIR]`: a training run's loss and learning-rate
//! curves as `loss_lr.png` and `loss_lr.svg`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct PlotArgs {
    /// The run's output directory, holding its metrics.jsonl.
    run_dir: PathBuf,
    /// Where to write the figures (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let plotted = rgpt_train::plot::plot_run(&args.run_dir, args.out.as_deref(), Vec::new())?;
    println!("{}", plotted.png.display());
    println!("{}", plotted.svg.display());
    Ok(())
}

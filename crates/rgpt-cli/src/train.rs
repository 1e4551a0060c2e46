//! `rgpt train --config FILE.yaml [--resume | --overwrite]`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rgpt_train::config::TrainConfig;
use rgpt_train::data_parallel::DataParallel;
use rgpt_train::run_dir::{claim_output_dir, RunStart};
use rgpt_train::trainer::Trainer;

#[derive(Args)]
pub struct TrainArgs {
    /// The run's YAML config (see configs/).
    #[arg(long)]
    config: PathBuf,
    /// Continue the run in the output directory from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start over in an output directory that holds a run.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = TrainConfig::from_file(&args.config)?;
    let start = match (args.resume, args.overwrite) {
        (true, _) => RunStart::Resume,
        (_, true) => RunStart::Overwrite,
        _ => RunStart::Fresh,
    };
    // Launched (rgpt launch, torchrun, srun) with a `distributed` section:
    // one rank of a data-parallel run, in which rank 0 claims the output
    // directory and writes the run's files.
    let dist = DataParallel::join(&config).context("while joining the distributed run")?;
    let main = dist.as_ref().is_none_or(|d| d.rank() == 0);
    if main {
        claim_output_dir(&config, start, &args.config)?;
    }
    if let Some(dist) = &dist {
        dist.barrier()
            .context("while waiting for rank 0 to claim the output directory")?;
    }
    let mut trainer = Trainer::in_group(config, dist).context("while setting up the run")?;
    if main && !trainer.skipped().is_empty() {
        // Said at the start, where the user can still stop a run on the
        // wrong data (set data.strict to refuse it instead).
        eprint!("before training, {}", trainer.skipped());
    }
    if args.resume && trainer.resume()? && main {
        eprintln!(
            "resuming at step {} of {}",
            trainer.state.step, trainer.total_steps
        );
    }
    // Ctrl-C ends the run after the step in progress, checkpointed; a
    // second one ends it at once.
    let interrupt = trainer.interrupt_flag();
    ctrlc::set_handler(move || {
        if interrupt.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to stop at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let bar = if main {
        crate::runtime::progress_bar("train", Some(trainer.total_steps), crate::runtime::COUNT)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_position(trainer.state.step);
    let plain = bar.is_hidden();
    let every = (trainer.total_steps / 20).max(1);
    let ran = trainer.run(None, &mut |m| {
        bar.set_position(m.step);
        bar.set_message(format!("loss {:.4} lr {:.2e}", m.loss, m.lr));
        if let Some(held_out) = m.eval_loss {
            // Held-out scores are rare and worth keeping on screen.
            if main {
                bar.suspend(|| eprintln!("step {}: held-out loss {held_out:.4}", m.step));
            }
        }
        if main && plain && (m.step % every == 0 || m.step == m.total_steps) {
            eprintln!(
                "step {}/{}: loss {:.4}, lr {:.2e}, {:.1} samples/s",
                m.step, m.total_steps, m.loss, m.lr, m.samples_per_s
            );
        }
    });
    bar.finish_and_clear();
    if let Err(rgpt_train::TrainError::Interrupted { step, checkpoint }) = &ran {
        if !main {
            std::process::exit(130);
        }
        eprintln!(
            "interrupted after step {step} of {}; checkpoint: {}",
            trainer.total_steps,
            checkpoint.display()
        );
        eprintln!(
            "resume with: rgpt train --config {} --resume",
            args.config.display()
        );
        std::process::exit(130);
    }
    ran?;
    let model = trainer.save_model()?;
    if main {
        println!("trained model written to {}", model.display());
    }
    Ok(())
}

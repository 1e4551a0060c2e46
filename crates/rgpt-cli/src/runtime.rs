//! What every command that loads a model shares: where and how it runs
//! (`--device`, `--dtype`, `--threads`), and the one progress-bar style.
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rgpt_llm::device::{parse_device, parse_dtype};

/// Where and how the model runs.
#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads, at least 1 (default: libtorch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
}

impl RuntimeArgs {
    /// Sets the thread count and returns the device and dtype to load with.
    pub fn apply(&self) -> anyhow::Result<(tch::Device, tch::Kind)> {
        if let Some(threads) = self.threads {
            tch::set_num_threads(threads);
        }
        Ok((parse_device(&self.device)?, parse_dtype(&self.dtype)?))
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal, in the
/// style every command uses: `prefix [bar] pos/len message eta`. `units`
/// is `{pos}/{len}` or a byte form such as
/// `{binary_bytes}/{binary_total_bytes}`.
pub fn progress_bar(prefix: &str, total: Option<u64>, units: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = format!("{{prefix:>12}} [{{bar:30}}] {units} {{msg}} eta {{eta}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// `{pos}/{len}`: counted items.
pub const COUNT: &str = "{pos}/{len}";

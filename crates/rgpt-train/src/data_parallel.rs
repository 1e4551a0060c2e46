//! Data-parallel training as PyTorch's DDP does it, over rgpt-dist's c10d
//! process group: every rank holds the whole model (broadcast from rank 0
//! at the start), takes its own share of each step's samples, and the
//! gradients of the trainable variables are summed across ranks in buckets
//! before the update, so every rank takes the same step. Each rank scales
//! its loss by its share of the step's answer tokens over all ranks
//! (`step::accumulate_share`), so the summed gradient is exactly the
//! token-weighted mean a single process with the same global batch gets.
use std::time::Duration;

use rgpt_dist::{Backend, DistEnv, ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

use crate::config::TrainConfig;
use crate::TrainError;

pub struct DataParallel {
    group: ProcessGroup,
    bucket_bytes: usize,
}

impl DataParallel {
    /// Data parallelism over `group`, reducing gradients in buckets of at
    /// most `bucket_mb` MiB.
    pub fn new(group: ProcessGroup, bucket_mb: f64) -> Self {
        DataParallel {
            group,
            bucket_bytes: (bucket_mb * 1024.0 * 1024.0) as usize,
        }
    }

    /// Joins the process group when a launcher started this process and
    /// the config has a `distributed` section; `None` for one process. A
    /// launched run without the section is refused: its ranks would each
    /// train alone and write over one another's output.
    pub fn join(config: &TrainConfig) -> Result<Option<Self>, TrainError> {
        let env = DistEnv::from_env()?;
        let (env, settings) = match (env, &config.distributed) {
            (None, _) => return Ok(None),
            (Some(env), None) if env.world_size > 1 => {
                return Err(TrainError::Invalid {
                    field: "distributed",
                    message: format!(
                        "this process is rank {} of {}, but the config has no `distributed` \
                         section; add `distributed: {{}}` to train data-parallel",
                        env.rank, env.world_size
                    ),
                })
            }
            (Some(_), None) => return Ok(None),
            (Some(env), Some(settings)) => (env, settings),
        };
        let backend: Backend = settings.backend.parse()?;
        let group = ProcessGroup::init(&env, backend, Duration::from_secs(settings.timeout_s))?;
        Ok(Some(DataParallel::new(group, settings.bucket_mb)))
    }

    /// The most bytes reduced in one collective.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// Where this rank trains: its GPU under NCCL, the CPU under Gloo.
    pub fn device(&self) -> tch::Device {
        self.group.device()
    }

    /// Every rank's `value`, in rank order.
    pub fn gather(&self, value: usize) -> Result<Vec<usize>, TrainError> {
        let mut values = vec![0.0; self.world_size()];
        values[self.rank()] = value as f64;
        Ok(self.sum(&values)?.into_iter().map(|v| v as usize).collect())
    }

    pub fn barrier(&self) -> Result<(), TrainError> {
        Ok(self.group.barrier()?)
    }

    /// Fails on every rank when any rank read a different config: they
    /// would train different things, or the same thing differently.
    pub fn check_same_config(&self, config: &TrainConfig) -> Result<(), TrainError> {
        let store = self.group.store();
        let mine = serde_json::to_value(config).unwrap_or_default();
        store.set(
            &format!("rgpt/config/{}", self.rank()),
            mine.to_string().as_bytes(),
        )?;
        let others: Vec<usize> = if self.rank() == 0 {
            (1..self.world_size()).collect()
        } else {
            vec![0]
        };
        for other in others {
            let theirs = store.get(&format!("rgpt/config/{other}"))?;
            let theirs: serde_json::Value = serde_json::from_slice(&theirs).unwrap_or_default();
            if theirs != mine {
                let field = differing_field(&mine, &theirs);
                return Err(TrainError::Invalid {
                    field: "distributed",
                    message: format!(
                        "rank {}'s config differs from rank {other}'s in `{field}`; every rank \
                         must read the same config",
                        self.rank()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Copies rank 0's value of every variable into every rank's.
    pub fn broadcast(&self, variables: &[Tensor]) -> Result<(), TrainError> {
        let _no_grad = tch::no_grad_guard();
        for variable in variables {
            let mut value = self.to_group(variable);
            self.group.broadcast(&mut value, 0)?;
            if value.data_ptr() != variable.data_ptr() {
                variable.shallow_clone().copy_(&value);
            }
        }
        Ok(())
    }

    /// Sums `values` over the ranks (in f64).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>, TrainError> {
        let mut tensor = self.to_group(&Tensor::from_slice(values));
        self.group.all_reduce(&mut tensor, ReduceOp::Sum)?;
        Ok(Vec::<f64>::try_from(tensor.to_device(tch::Device::Cpu))?)
    }

    /// Whether `flag` holds on any rank.
    pub fn any(&self, flag: bool) -> Result<bool, TrainError> {
        let mut tensor = self.to_group(&Tensor::from_slice(&[i64::from(flag)]));
        self.group.all_reduce(&mut tensor, ReduceOp::Max)?;
        Ok(i64::try_from(tensor.to_device(tch::Device::Cpu))? > 0)
    }

    /// Which of `params` have a gradient on at least one rank this step
    /// (AdamW skips a variable without one, and so must every rank alike).
    pub fn used_by_any_rank(&self, params: &[Tensor]) -> Result<Vec<bool>, TrainError> {
        let defined: Vec<f64> = params
            .iter()
            .map(|p| f64::from(u8::from(p.grad().defined())))
            .collect();
        Ok(self.sum(&defined)?.iter().map(|&n| n > 0.0).collect())
    }

    /// Sums the gradients of `params` over the ranks, in buckets of at
    /// most `bucket_mb` of one dtype. A variable no rank used this step
    /// keeps no gradient (the optimiser skips it, as in one process); one
    /// that only some ranks used gets the sum of theirs.
    pub fn all_reduce_gradients(&self, params: &[Tensor]) -> Result<(), TrainError> {
        let _no_grad = tch::no_grad_guard();
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        let used = self.used_by_any_rank(params)?;
        let reduced: Vec<usize> = (0..params.len()).filter(|&i| used[i]).collect();
        let mut start = 0;
        while start < reduced.len() {
            // A bucket: consecutive variables of one dtype, up to the size.
            let kind = params[reduced[start]].kind();
            let mut end = start;
            let mut bytes = 0;
            while end < reduced.len() && params[reduced[end]].kind() == kind {
                let size = params[reduced[end]].numel() * kind.elt_size_in_bytes();
                if end > start && bytes + size > self.bucket_bytes {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let bucket = &reduced[start..end];
            let flat: Vec<Tensor> = bucket
                .iter()
                .map(|&i| {
                    if grads[i].defined() {
                        grads[i].flatten(0, -1)
                    } else {
                        params[i].zeros_like().flatten(0, -1)
                    }
                })
                .collect();
            let mut flat = self.to_group(&Tensor::cat(&flat, 0));
            self.group.all_reduce(&mut flat, ReduceOp::Sum)?;
            let mut offset = 0;
            for &i in bucket {
                let n = params[i].numel() as i64;
                let piece = flat
                    .narrow(0, offset, n)
                    .view(params[i].size().as_slice())
                    .to_device(params[i].device());
                offset += n;
                if grads[i].defined() {
                    grads[i].shallow_clone().copy_(&piece);
                } else {
                    // Gives the variable a gradient equal to `piece`.
                    tch::with_grad(|| {
                        (&params[i] * piece.to_kind(params[i].kind()))
                            .sum(Kind::Float)
                            .backward()
                    });
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Sums a flat `[world * n]` vector over the ranks and gives this rank
    /// its `n` entries (`[rank * n, (rank + 1) * n)`).
    pub fn reduce_scatter_sum(&self, flat: &Tensor) -> Result<Tensor, TrainError> {
        Ok(self
            .group
            .reduce_scatter(&self.to_group(flat), ReduceOp::Sum)?)
    }

    /// Every rank's `[n]` shard end to end: `[world * n]`.
    pub fn all_gather_flat(&self, shard: &Tensor) -> Result<Tensor, TrainError> {
        let shards = self.group.all_gather(&self.to_group(shard))?;
        Ok(Tensor::cat(&shards, 0))
    }

    /// `tensor` on the group's device (Gloo works on the CPU), contiguous.
    fn to_group(&self, tensor: &Tensor) -> Tensor {
        tensor.to_device(self.group.device()).contiguous()
    }
}

/// The first top-level field in which two configs differ.
fn differing_field(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "the whole config".into();
    };
    a.keys()
        .chain(b.keys())
        .find(|k| a.get(*k) != b.get(*k))
        .cloned()
        .unwrap_or_else(|| "the whole config".into())
}

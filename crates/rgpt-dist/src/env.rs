//! Where this process stands in a distributed run, read from the variables
//! its launcher set: torchrun's (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`, also what `rgpt launch` sets) or Slurm's
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of
//! `SLURM_JOB_NODELIST`), so `torchrun --no-python rgpt train ...` and
//! `srun rgpt train ...` both work.
use crate::error::{DistError, Result};

/// torchrun's default rendezvous port.
pub const DEFAULT_PORT: u16 = 29500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among this machine's processes: its GPU.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistEnv {
    /// From this process's environment; `None` when no launcher started it.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From variables `var` looks up: torchrun's first, then Slurm's.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let number = |name: &'static str| -> Result<Option<usize>> {
            var(name)
                .map(|text| {
                    text.trim().parse().map_err(|_| DistError::Env {
                        variable: name,
                        message: format!("{text:?} is not a whole number"),
                    })
                })
                .transpose()
        };
        let port = || -> Result<u16> {
            Ok(match var("MASTER_PORT") {
                None => DEFAULT_PORT,
                Some(text) => text.trim().parse().map_err(|_| DistError::Env {
                    variable: "MASTER_PORT",
                    message: format!("{text:?} is not a port number"),
                })?,
            })
        };
        let (rank, world_size, local_rank, master_addr) =
            match (number("RANK")?, number("WORLD_SIZE")?) {
                (Some(rank), Some(world)) => {
                    let local = number("LOCAL_RANK")?.unwrap_or(rank);
                    let addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
                    (rank, world, local, addr)
                }
                (None, Some(_)) => {
                    return Err(DistError::Env {
                        variable: "RANK",
                        message: "WORLD_SIZE is set but RANK is not; a launcher sets both \
                                  (use rgpt launch or torchrun)"
                            .into(),
                    })
                }
                (Some(_), None) => {
                    return Err(DistError::Env {
                        variable: "WORLD_SIZE",
                        message: "RANK is set but WORLD_SIZE is not; a launcher sets both \
                                  (use rgpt launch or torchrun)"
                            .into(),
                    })
                }
                (None, None) => match (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                    (Some(rank), Some(world)) => {
                        let local = number("SLURM_LOCALID")?.unwrap_or(0);
                        let addr = match var("MASTER_ADDR") {
                            Some(addr) => addr,
                            None => {
                                let list = var("SLURM_JOB_NODELIST")
                                    .or_else(|| var("SLURM_NODELIST"))
                                    .ok_or(DistError::Env {
                                        variable: "SLURM_JOB_NODELIST",
                                        message: "Slurm gave no node list; set MASTER_ADDR \
                                                  to the first node's address"
                                            .into(),
                                    })?;
                                first_host(&list).ok_or_else(|| DistError::Env {
                                    variable: "SLURM_JOB_NODELIST",
                                    message: format!("cannot read a host from {list:?}"),
                                })?
                            }
                        };
                        (rank, world, local, addr)
                    }
                    _ => return Ok(None),
                },
            };
        if world_size == 0 || rank >= world_size {
            return Err(DistError::Env {
                variable: "RANK",
                message: format!("rank {rank} is not below the world size {world_size}"),
            });
        }
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port: port()?,
        }))
    }
}

/// The first host of a Slurm node list: `gpu[03-05,09],cpu1` gives
/// `gpu03`, `a,b` gives `a`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inside = &list[end + 1..list[end..].find(']')? + end];
        let first = inside.split([',', '-']).next()?.trim();
        let rest = &list[list[end..].find(']')? + end + 1..];
        let suffix = &rest[..rest.find(',').unwrap_or(rest.len())];
        (!first.is_empty()).then(|| format!("{prefix}{first}{suffix}"))
    } else {
        (!prefix.is_empty()).then(|| prefix.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let got = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.2"),
            ("MASTER_PORT", "29501"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            DistEnv {
                rank: 3,
                world_size: 8,
                local_rank: 1,
                master_addr: "10.0.0.2".into(),
                master_port: 29501
            }
        );
    }

    #[test]
    fn slurm_variables() {
        let got = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "5"),
            ("SLURM_JOB_NODELIST", "gpu[03-04,09]"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((got.rank, got.world_size, got.local_rank), (5, 16, 5));
        assert_eq!(
            (got.master_addr.as_str(), got.master_port),
            ("gpu03", 29500)
        );
    }

    #[test]
    fn no_launcher_is_one_process() {
        assert_eq!(env(&[]).unwrap(), None);
    }

    #[test]
    fn mistakes_name_the_variable() {
        let message = |vars: &[(&str, &str)]| env(vars).unwrap_err().to_string();
        assert!(message(&[("WORLD_SIZE", "2")]).starts_with("RANK: WORLD_SIZE is set"));
        assert!(message(&[("RANK", "0")]).starts_with("WORLD_SIZE: RANK is set"));
        assert!(message(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("not below"));
        assert!(message(&[("RANK", "x"), ("WORLD_SIZE", "2")]).starts_with("RANK: \"x\""));
        assert!(
            message(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_PORT", "99999")])
                .starts_with("MASTER_PORT")
        );
    }

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_host("node01").as_deref(), Some("node01"));
        assert_eq!(first_host("a,b").as_deref(), Some("a"));
        assert_eq!(first_host("gpu[003-010]").as_deref(), Some("gpu003"));
        assert_eq!(first_host("gpu[7,9]-ib,cpu1").as_deref(), Some("gpu7-ib"));
        assert_eq!(first_host("").as_deref(), None);
    }
}

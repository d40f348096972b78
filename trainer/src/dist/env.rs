//! Where a worker stands in the job: rank, world size, local rank and the rendezvous address,
//! read from what `imagen launch` and torchrun set (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) or from an srun step's (`SLURM_PROCID`,
//! `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, `SLURM_STEP_TASKS_PER_NODE`, the node list).

use crate::error::{Result, TrainerError};

/// The port torchrun uses when `MASTER_PORT` is not set.
pub const DEFAULT_MASTER_PORT: u16 = 29500;
/// The lowest port a Slurm step derives (scripts/slurm/launch.sbatch derives the same).
const SLURM_PORT_BASE: u16 = 10000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldInfo {
    pub rank: usize,
    pub world_size: usize,
    /// Index of this worker on its node (its CUDA device).
    pub local_rank: usize,
    /// Workers per node; rank r runs on node r / local_world_size.
    pub local_world_size: usize,
    /// Where rank 0 serves the rendezvous store.
    pub master_addr: String,
    pub master_port: u16,
    /// Which launcher described the job ("torchrun-style environment" or "Slurm").
    pub source: &'static str,
    /// torchrun's agent already serves the store at the master address
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`), so every worker, rank 0 included, connects to it
    /// as a client.
    pub agent_store: bool,
    /// Put in front of every key the job stores: under torchrun's agent store, which outlives a
    /// restart (`--max-restarts`), `/worker/attempt_<TORCHELASTIC_RESTART_COUNT>/` as
    /// `torch.distributed` does, so a restarted job reads none of the failed attempt's keys
    /// (its rendezvous, its abort). Empty otherwise.
    pub key_prefix: String,
}

impl WorldInfo {
    /// The job this process belongs to, or None for a single-process run. Explicit torchrun-style
    /// variables win over Slurm's; a Slurm step with one task is a single-process run.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`WorldInfo::from_env`], for a command that splits its work by rank but never meets
    /// the other ranks (`imagen embed`): it needs no rendezvous address, so a job spanning
    /// several nodes without `MASTER_ADDR` is not refused; `master_addr` may then be a stand-in.
    pub fn placement_from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| {
            std::env::var(k).ok().or_else(|| (k == "MASTER_ADDR").then(|| "unused".to_owned()))
        })
    }

    /// As [`WorldInfo::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        if let (Some(rank), Some(world)) = (var("RANK"), var("WORLD_SIZE")) {
            let source = "torchrun-style environment";
            let rank = number("RANK", &rank)?;
            let world_size = number("WORLD_SIZE", &world)?;
            let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
            let local_world_size = optional(&var, "LOCAL_WORLD_SIZE")?;
            // Without LOCAL_RANK: the rank's place on its node where the node's worker count is
            // known, else the rank itself (one node).
            let local_rank = optional(&var, "LOCAL_RANK")?
                .unwrap_or_else(|| local_world_size.map_or(rank, |n| rank % n.max(1)));
            let local_world_size = local_world_size.unwrap_or(world_size);
            let master_addr = match var("MASTER_ADDR") {
                Some(addr) => addr,
                // Loopback would leave the other nodes' workers waiting out the rendezvous.
                None if local_world_size < world_size => {
                    return Err(dist_error(format!(
                        "{source}: MASTER_ADDR is not set, and the job spans several nodes \
                         (WORLD_SIZE {world_size}, LOCAL_WORLD_SIZE {local_world_size}): set it \
                         to rank 0's node"
                    )))
                }
                None => "127.0.0.1".into(),
            };
            let info = Self {
                rank,
                world_size,
                local_rank,
                local_world_size,
                master_addr,
                master_port: port(&var)?.unwrap_or(DEFAULT_MASTER_PORT),
                source,
                agent_store,
                key_prefix: if agent_store {
                    let attempt = optional(&var, "TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0);
                    format!("/worker/attempt_{attempt}/")
                } else {
                    String::new()
                },
            };
            return info.validated().map(Some);
        }
        let Some(rank) = var("SLURM_PROCID") else {
            return Ok(None);
        };
        // srun gives each task of a step SLURM_STEP_NUM_TASKS. The job's batch script (or an
        // salloc shell) has SLURM_PROCID 0 and the job's SLURM_NTASKS but no step count: it is
        // one process, not rank 0 of the job's tasks, which would wait for ranks never started.
        let Some(tasks) = var("SLURM_STEP_NUM_TASKS") else {
            if let Some(n) =
                var("SLURM_NTASKS").filter(|n| n.trim().parse().is_ok_and(|n: usize| n > 1))
            {
                tracing::warn!(
                    "Slurm: this job has {n} tasks (SLURM_NTASKS), but this process is not a \
                     task of an srun step (no SLURM_STEP_NUM_TASKS; the job's batch script?), so \
                     it runs alone; start the workers with `srun imagen ...`"
                );
            }
            return Ok(None);
        };
        let rank = number("SLURM_PROCID", &rank)?;
        let world_size = number("SLURM_STEP_NUM_TASKS", &tasks)?;
        if world_size <= 1 {
            return Ok(None);
        }
        let local_rank = optional(&var, "SLURM_LOCALID")?.unwrap_or(0);
        // "4" or "4(x2)" or "4(x2),3": the first node's count, which names the node of a rank in
        // messages (exact when every node runs as many tasks). The step's own count comes first:
        // SLURM_NTASKS_PER_NODE may be inherited from an sbatch line that the step overrode.
        let per_node = var("SLURM_STEP_TASKS_PER_NODE")
            .or_else(|| var("SLURM_NTASKS_PER_NODE"))
            .or_else(|| var("SLURM_TASKS_PER_NODE"))
            .and_then(|v| v.split(['(', ',']).next().and_then(|n| n.trim().parse().ok()))
            .unwrap_or(world_size);
        let master_addr = match var("MASTER_ADDR") {
            Some(a) => a,
            None => {
                let list = var("SLURM_STEP_NODELIST").or_else(|| var("SLURM_JOB_NODELIST"));
                let list = list.ok_or_else(|| {
                    dist_error(
                        "Slurm job without SLURM_JOB_NODELIST: set MASTER_ADDR to the first node"
                            .into(),
                    )
                })?;
                first_host(&list).ok_or_else(|| {
                    dist_error(format!("cannot read the first host of SLURM_JOB_NODELIST={list:?}"))
                })?
            }
        };
        // Every task of the step derives the same port from the job and step ids, so concurrent
        // jobs on shared nodes, and concurrent steps of one allocation (`srun ... &`), do not
        // collide; below Linux's ephemeral ports (32768-60999), which outgoing connections take.
        let master_port = match port(&var)? {
            Some(p) => p,
            None => match var("SLURM_JOB_ID").and_then(|id| id.parse::<u64>().ok()) {
                Some(job) => {
                    let step =
                        var("SLURM_STEP_ID").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                    SLURM_PORT_BASE + ((job * 101 + step) % 20000) as u16
                }
                None => DEFAULT_MASTER_PORT,
            },
        };
        Self {
            rank,
            world_size,
            local_rank,
            local_world_size: per_node,
            master_addr,
            master_port,
            source: "Slurm",
            agent_store: false,
            key_prefix: String::new(),
        }
        .validated()
        .map(Some)
    }

    /// The node rank `rank` runs on.
    pub fn node_of(&self, rank: usize) -> usize {
        rank / self.local_world_size.max(1)
    }

    fn validated(self) -> Result<Self> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(dist_error(format!(
                "{}: rank {} is not below the world size {}",
                self.source, self.rank, self.world_size
            )));
        }
        // A Slurm step may place uneven task counts on its nodes ("2,4"), so the local rank is
        // checked against the per-node count only where the launcher set it for this node.
        let own_count = self.source != "Slurm";
        if self.local_world_size == 0 || (own_count && self.local_rank >= self.local_world_size) {
            return Err(dist_error(format!(
                "{}: local rank {} is not below the local world size {}",
                self.source, self.local_rank, self.local_world_size
            )));
        }
        Ok(self)
    }
}

fn dist_error(message: String) -> TrainerError {
    TrainerError::Dist(message)
}

fn number(name: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| dist_error(format!("{name}={value:?} is not a number")))
}

fn optional(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    var(name).map(|v| number(name, &v)).transpose()
}

fn port(var: &impl Fn(&str) -> Option<String>) -> Result<Option<u16>> {
    var("MASTER_PORT")
        .map(|v| {
            v.trim().parse().map_err(|_| dist_error(format!("MASTER_PORT={v:?} is not a port")))
        })
        .transpose()
}

/// The CUDA device of the worker of `local_rank` on a node that shows it `count` devices: its
/// local rank's, or the only one where the launcher gave each worker its own (Slurm's
/// `--gpus-per-task=1` or `--gpu-bind`, one pod per GPU).
pub fn cuda_index(local_rank: usize, count: i64) -> Result<usize> {
    match count.max(0) as usize {
        1 => Ok(0),
        count if local_rank < count => Ok(local_rank),
        count => Err(TrainerError::Dist(format!(
            "local rank {local_rank} needs CUDA device {local_rank}, but this worker sees {count} \
             (CUDA_VISIBLE_DEVICES, or the launcher's GPU binding, should leave it one device or \
             all of the node's)"
        ))),
    }
}

/// The first host of a Slurm host list: "gpu[003-005,9],login1" -> "gpu003". Each bracket
/// group contributes its first value, and text around and between groups is kept, as Slurm's
/// hostlist expansion does: "node[1-3]-ib" -> "node1-ib", "rack[1-2]n[07-08]" -> "rack1n07".
pub fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut rest = list.trim();
    loop {
        let end = rest.find([',', '[']).unwrap_or(rest.len());
        host.push_str(&rest[..end]);
        rest = &rest[end..];
        let Some(group) = rest.strip_prefix('[') else { break };
        let close = group.find(']')?;
        let first = group[..close].split([',', '-']).next()?.trim();
        if first.is_empty() {
            return None;
        }
        host.push_str(first);
        rest = &group[close + 1..];
    }
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<WorldInfo>> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        WorldInfo::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let info = read(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((info.rank, info.world_size, info.local_rank), (5, 8, 1));
        assert_eq!((info.master_addr.as_str(), info.master_port), ("node0", 1234));
        assert_eq!(info.node_of(5), 1);
        assert!(!info.agent_store && info.key_prefix.is_empty());
        let under_torchrun = read(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert!(under_torchrun.agent_store);
        assert_eq!(under_torchrun.key_prefix, "/worker/attempt_2/");
        // Without LOCAL_RANK, the place on the node; without MASTER_ADDR, loopback on one node
        // and an error across several.
        let partial = read(&[("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_WORLD_SIZE", "4")]);
        let err = partial.unwrap_err().to_string();
        assert!(err.contains("MASTER_ADDR is not set") && err.contains("several nodes"), "{err}");
        let info = read(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node0"),
        ]);
        assert_eq!(info.unwrap().unwrap().local_rank, 1);
        let one_node = read(&[("RANK", "1"), ("WORLD_SIZE", "2")]).unwrap().unwrap();
        assert_eq!((one_node.local_rank, one_node.master_addr.as_str()), (1, "127.0.0.1"));
    }

    #[test]
    fn slurm_variables() {
        let info = read(&[
            ("SLURM_PROCID", "6"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "2"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("SLURM_JOB_NODELIST", "gpu[007-008]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (info.rank, info.world_size, info.local_rank, info.local_world_size),
            (6, 8, 2, 4)
        );
        assert_eq!(info.master_addr, "gpu007");
        assert_eq!(info.master_port, 10000 + ((123456 * 101) % 20000) as u16);
        assert_eq!(info.source, "Slurm");
    }

    #[test]
    fn single_process_and_bad_values() {
        assert_eq!(read(&[]).unwrap(), None);
        let one_task =
            [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"), ("SLURM_STEP_NUM_TASKS", "1")];
        assert_eq!(read(&one_task).unwrap(), None);
        let err = read(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("rank 2 is not below the world size 2"), "{err}");
        let err = read(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK=\"x\""), "{err}");
    }

    #[test]
    fn a_jobs_batch_script_runs_alone_and_a_step_counts_its_own_tasks() {
        // The batch script of an 8-task job: no step count, so not rank 0 of 8.
        let batch = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_JOB_NODELIST", "gpu[1-2]"),
            ("SLURM_JOB_ID", "9"),
        ];
        assert_eq!(read(&batch).unwrap(), None);
        // `srun --ntasks 2 --preserve-env` inside it keeps the job's SLURM_NTASKS.
        let step = [&batch[..], &[("SLURM_STEP_NUM_TASKS", "2"), ("SLURM_PROCID", "1")]].concat();
        let info = read(&step).unwrap().unwrap();
        assert_eq!((info.rank, info.world_size), (1, 2));
    }

    #[test]
    fn slurm_host_lists() {
        assert_eq!(first_host("gpu[003-005,9],login1").as_deref(), Some("gpu003"));
        assert_eq!(first_host("n1,n2").as_deref(), Some("n1"));
        assert_eq!(first_host("solo").as_deref(), Some("solo"));
        assert_eq!(first_host("a[12]").as_deref(), Some("a12"));
        assert_eq!(first_host("").as_deref(), None);
        assert_eq!(first_host("node[1-3]-ib,login").as_deref(), Some("node1-ib"));
        assert_eq!(first_host("rack[1-2]n[07-08]").as_deref(), Some("rack1n07"));
        assert_eq!(first_host("a[").as_deref(), None);
        assert_eq!(first_host("a[]").as_deref(), None);
    }

    #[test]
    fn slurm_uneven_nodes_and_concurrent_steps() {
        // Node 1 of a "2,4" step: local ids 2 and 3 exist there.
        let vars = |step: &'static str| {
            vec![
                ("SLURM_PROCID", "5"),
                ("SLURM_NTASKS", "6"),
                ("SLURM_STEP_NUM_TASKS", "6"),
                ("SLURM_LOCALID", "3"),
                ("SLURM_NTASKS_PER_NODE", "8"),
                ("SLURM_STEP_TASKS_PER_NODE", "2,4"),
                ("SLURM_JOB_NODELIST", "gpu[1-2]"),
                ("SLURM_JOB_ID", "77"),
                ("SLURM_STEP_ID", step),
            ]
        };
        let first = read(&vars("0")).unwrap().unwrap();
        assert_eq!((first.local_rank, first.local_world_size), (3, 2));
        let second = read(&vars("1")).unwrap().unwrap();
        assert_ne!(first.master_port, second.master_port);
    }

    #[test]
    fn a_worker_takes_its_local_ranks_device_or_the_only_one_it_sees() {
        assert_eq!(cuda_index(3, 8).unwrap(), 3);
        assert_eq!(cuda_index(3, 1).unwrap(), 0, "bound to one GPU");
        assert_eq!(cuda_index(0, 1).unwrap(), 0);
        let err = cuda_index(3, 2).unwrap_err().to_string();
        assert!(err.contains("local rank 3") && err.contains("sees 2"), "{err}");
        assert!(cuda_index(0, 0).is_err());
    }
}

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use imagen_trainer::launch::{launch, LaunchOptions};

/// `imagen launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]
/// -- train ...`
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Workers on this node: one per GPU (each takes the CUDA device of its local rank).
    #[arg(long)]
    nproc_per_node: usize,
    /// Nodes in the job; run one launcher per node.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index (0 hosts rank 0 and the rendezvous store).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of node 0, reachable from every node.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// Port of the rendezvous store on node 0. Default: a free port when --nnodes is 1, else 29500.
    #[arg(long)]
    master_port: Option<u16>,
    /// Seconds the other workers get to stop after one fails, before they are killed. After a
    /// forwarded SIGINT/SIGTERM the workers get as long as their save takes; a second signal
    /// kills them.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// The imagen command each worker runs, e.g. `train --config X --stage 0`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> Result<()> {
    if args.nnodes > 1 && is_loopback(&args.master_addr) {
        anyhow::bail!(
            "--nnodes {} with --master-addr {}: the other nodes cannot reach a loopback address; \
             pass node 0's address or host name",
            args.nnodes,
            args.master_addr
        );
    }
    let master_port = match args.master_port {
        Some(p) => p,
        None if args.nnodes == 1 => {
            std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        }
        None => imagen_trainer::dist::env::DEFAULT_MASTER_PORT,
    };
    let code = launch(&LaunchOptions {
        nproc_per_node: args.nproc_per_node,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        master_addr: args.master_addr,
        master_port,
        grace: Duration::from_secs(args.grace_secs),
        program: std::env::current_exe()?,
        args: args.command,
    })?;
    if code != 0 {
        // The failing rank and how it ended are in the launcher's last log line.
        return Err(WorkerFailed(code).into());
    }
    Ok(())
}

/// A worker failed: the launcher exits with that worker's code (a scheduler's requeue or
/// preemption code reaches it), or 128 + the signal that killed the worker.
#[derive(Debug)]
pub struct WorkerFailed(pub i32);

impl WorkerFailed {
    pub fn exit_code(&self) -> u8 {
        u8::try_from(self.0).ok().filter(|&c| c != 0).unwrap_or(1)
    }
}

impl std::fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a worker failed; the launcher exits with code {}", self.exit_code())
    }
}

impl std::error::Error for WorkerFailed {}

/// Whether `addr` names this machine only (127.0.0.0/8, ::1, localhost).
fn is_loopback(addr: &str) -> bool {
    addr.eq_ignore_ascii_case("localhost")
        || addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

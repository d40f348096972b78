//! c10d collectives and DDP's reducer across two real processes on loopback (the CPU backend):
//! the test binary re-runs itself as rank 0 and rank 1.

use std::process::Command;
use std::time::{Duration, Instant};

use imagen_trainer::config::DistConfig;
use imagen_trainer::dist::{Dist, GradReducer, WorldInfo};
use tch::{Device, Kind, Tensor};

const CHILD: &str = "IMAGEN_TEST_DIST_CHILD";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `test` of this binary as ranks 0..world; every rank must exit 0 within the timeout.
fn run_ranks(test: &str, world: usize) {
    let port = free_port();
    let mut children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (rank, child) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "rank {rank} failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "rank {rank} hung");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn join() -> Dist {
    let info = WorldInfo::from_env().unwrap().expect("RANK and WORLD_SIZE are set");
    let cfg = DistConfig {
        rendezvous_timeout_secs: 60,
        collective_timeout_secs: 60,
        ..DistConfig::default()
    };
    Dist::init(info, &cfg, None).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn all_reduce_broadcast_and_barrier_across_two_processes() {
    if std::env::var(CHILD).is_err() {
        return run_ranks("all_reduce_broadcast_and_barrier_across_two_processes", 2);
    }
    let dist = join();
    let r = dist.rank() as f64;
    // Sums and means are exact for these values.
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1.0);
    let b = Tensor::from_slice(&[10i64, 20]) * (dist.rank() as i64 + 1);
    dist.pg.all_reduce(&[&a, &b], false).unwrap();
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![3.0, 6.0, 9.0]);
    assert_eq!(Vec::<i64>::try_from(&b).unwrap(), vec![30, 60]);
    let m = Tensor::from_slice(&[r as f32, 4.0 * r as f32]);
    dist.pg.all_reduce(&[&m], true).unwrap();
    assert_eq!(Vec::<f32>::try_from(&m).unwrap(), vec![0.5, 2.0]);
    // Broadcast overwrites with rank 0's values, several tensors coalesced.
    let x = Tensor::full([2, 3], r + 7.0, (Kind::Float, Device::Cpu));
    let y = Tensor::full([5], r - 1.0, (Kind::Double, Device::Cpu));
    dist.pg.broadcast(&[&x, &y], 0, 1 << 20).unwrap();
    assert_eq!(x.sum(Kind::Double).double_value(&[]), 42.0);
    assert_eq!(y.sum(Kind::Double).double_value(&[]), -5.0);
    // Tensors larger than the TCPStore's 8 MiB limit on one value travel in parts.
    let big = Tensor::arange(3_000_000, (Kind::Float, Device::Cpu)) * (r + 1.0);
    dist.pg.all_reduce(&[&big], false).unwrap();
    let want = Tensor::arange(3_000_000, (Kind::Float, Device::Cpu)) * 3.0;
    assert_eq!(max_diff(&big, &want), 0.0);
    let big = Tensor::full([2_500_000], r, (Kind::Double, Device::Cpu));
    dist.pg.broadcast(&[&big], 0, 32 << 20).unwrap();
    assert_eq!(big.abs().sum(Kind::Double).double_value(&[]), 0.0);
    dist.pg.barrier().unwrap();
    // Gathering host values to rank 0 through the store.
    let all = dist.gather_json("probe", &serde_json::json!({"rank": dist.rank()})).unwrap();
    if dist.is_main() {
        let ranks: Vec<_> = all.unwrap().iter().map(|v| v["rank"].as_u64().unwrap()).collect();
        assert_eq!(ranks, vec![0, 1]);
    } else {
        assert!(all.is_none());
    }
}

/// A 2-layer model whose inputs depend on the rank; each rank can compute every rank's local
/// gradient itself, so it knows what the average must be.
fn local_grads(params: &[Tensor], rank: usize, micro: usize) -> Vec<Tensor> {
    let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]) / 7.0
        + (rank * 10 + micro) as f64;
    let h = x.matmul(&params[0]).tanh();
    let loss = h.matmul(&params[1]).square().mean(Kind::Float);
    Tensor::run_backward(&[loss], params, false, false)
}

fn model() -> Vec<Tensor> {
    tch::manual_seed(3);
    vec![
        Tensor::randn([4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        Tensor::randn([5, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true),
    ]
}

fn backward(params: &[Tensor], rank: usize, micro: usize) {
    let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]) / 7.0
        + (rank * 10 + micro) as f64;
    let h = x.matmul(&params[0]).tanh();
    h.matmul(&params[1]).square().mean(Kind::Float).backward();
}

#[test]
fn reducer_averages_gradients_and_skips_accumulation_steps() {
    if std::env::var(CHILD).is_err() {
        return run_ranks("reducer_averages_gradients_and_skips_accumulation_steps", 2);
    }
    let dist = join();
    let params = model();
    // Tiny buckets: one parameter each, so more than one bucket is exercised.
    let reducer = GradReducer::new(&dist.pg, &params, 64, 64).unwrap();
    assert!(reducer.buckets >= 2, "{} buckets", reducer.buckets);
    for step in 0..3 {
        // Two micro-steps; only the last backward is synchronised.
        backward(&params, dist.rank(), 0);
        reducer.prepare_for_backward().unwrap();
        backward(&params, dist.rank(), 1);
        let expected: Vec<Tensor> = (0..2)
            .map(|i| {
                let per_rank: Vec<Tensor> = (0..2)
                    .map(|rank| {
                        &local_grads(&params, rank, 0)[i] + &local_grads(&params, rank, 1)[i]
                    })
                    .collect();
                (&per_rank[0] + &per_rank[1]) / 2.0
            })
            .collect();
        for (p, want) in params.iter().zip(&expected) {
            let got = p.grad();
            assert!(max_diff(&got, want) < 1e-5, "step {step}: {got:?} vs {want:?}");
        }
        for p in &params {
            let _ = p.grad().zero_();
        }
    }
}

#[test]
fn a_missing_rank_is_named() {
    let info = WorldInfo {
        rank: 0,
        world_size: 3,
        local_rank: 0,
        local_world_size: 2,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        source: "test",
        agent_store: false,
        key_prefix: String::new(),
    };
    let cfg = DistConfig { rendezvous_timeout_secs: 1, ..DistConfig::default() };
    let err = Dist::init(info, &cfg, None).err().expect("nobody else joins").to_string();
    assert!(err.contains("2 of 3 workers never joined"), "{err}");
    assert!(err.contains("rank 1 (node 0), rank 2 (node 1)"), "{err}");
}

//! `imagen bench train`: samples/s, the step's phases, peak memory and MFU of a stage's U-Net.

use anyhow::Result;
use clap::{Args, Subcommand};
use imagen_trainer::bench::{bench_train, BenchOptions, BenchReport};

use super::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the training step of one stage's U-Net on synthetic batches.
    Train(BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Stage of the cascade (0 is the base).
    #[arg(long, default_value_t = 0)]
    stage: usize,
    /// Samples per step.
    #[arg(long)]
    batch: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first (allocator, autotuning, caches).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Peak dense TFLOP/s of the device for the MFU. Default: 790 on CUDA (H200 bf16 dense, as
    /// a large bf16 matmul reaches on our machines); none on the CPU.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// The device's specified dense peak, for the MFU as it is usually quoted. Default: 989.4 on
    /// CUDA (H200 SXM, bf16 dense); none on the CPU.
    #[arg(long)]
    spec_tflops: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => {
            let cfg = args.config.load()?;
            let on_cuda = imagen_trainer::train::resolve_device(&cfg.train.device)?.is_cuda();
            let peak = args.peak_tflops.or(on_cuda.then_some(790.0));
            let spec = args.spec_tflops.or(on_cuda.then_some(989.4));
            let report = bench_train(
                &cfg,
                &BenchOptions {
                    stage: args.stage,
                    batch: args.batch,
                    steps: args.steps.max(1),
                    warmup: args.warmup,
                    peak_tflops: peak,
                    spec_tflops: spec,
                },
            )?;
            // Every worker of a group measures; rank 0 speaks for them.
            if report.rank != 0 {
                return Ok(());
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            Ok(())
        }
    }
}

fn print_report(r: &BenchReport) {
    let ms = |s: f64| s * 1e3;
    println!(
        "stage {} on {} ({}), batch {}, {:.1} M params, {:.1} GFLOPs/sample (train)",
        r.config_stage,
        r.device,
        r.precision,
        r.batch,
        r.params as f64 / 1e6,
        r.flops_per_sample_train as f64 / 1e9
    );
    println!(
        "samples/s {:.2} (median of {} steps; step {:.1} ms, min {:.1}, max {:.1})",
        r.samples_per_sec,
        r.steps,
        ms(r.step_secs_median),
        ms(r.step_secs_min),
        ms(r.step_secs_max)
    );
    let p = &r.phases;
    println!(
        "phases (ms, medians): data {:.1} | forward {:.1} | backward {:.1} | optimizer {:.1} | EMA {:.1}",
        ms(p.data),
        ms(p.forward),
        ms(p.backward),
        ms(p.optimizer),
        ms(p.ema)
    );
    println!("peak memory {:.2} GiB", r.peak_memory_bytes as f64 / (1u64 << 30) as f64);
    match (r.mfu, r.peak_tflops) {
        (Some(mfu), Some(peak)) => {
            print!("MFU {:.1}% of {peak:.0} TFLOP/s", mfu * 100.0);
            match (r.mfu_spec, r.spec_tflops) {
                (Some(m), Some(spec)) => println!(" ({:.1}% of the spec's {spec:.1})", m * 100.0),
                _ => println!(),
            }
        }
        _ => println!("MFU: pass --peak-tflops (and --spec-tflops) for the device"),
    }
    if let Some(c) = &r.comm {
        println!(
            "all-reduce over {} rank(s) ({}, {} bucket(s)): backward {:.1} ms synced, {:.1} ms \
             local; the buckets alone {:.1} ms; exposed {:.1} ms, overlap {:.0}%",
            c.world_size,
            c.backend,
            c.buckets,
            ms(c.backward_synced),
            ms(c.backward_local),
            ms(c.allreduce_alone),
            ms(c.exposed),
            c.overlap * 100.0
        );
    }
}

//! `imagen bench train`: the U-Net's training step, timed phase by phase.

mod train_step;

pub use train_step::{bench_train, BenchOptions, BenchReport, CommReport, PhaseSeconds};

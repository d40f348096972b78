//! Optimisation: AdamW with checkpointable state, learning-rate schedules, gradient clipping,
//! and the exponential moving average of the weights.

pub mod adamw;
pub mod clip;
pub mod ema;
pub mod kernel;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use ema::{Ema, EmaConfig};
pub use kernel::OptimizerKernel;
pub use schedule::{LrSchedule, ScheduleKind};

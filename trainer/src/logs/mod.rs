//! What a run writes for people to read: TensorBoard event files and `metrics.jsonl`.

pub mod jsonl;
pub mod tensorboard;

pub use jsonl::MetricsJsonl;
pub use tensorboard::EventWriter;

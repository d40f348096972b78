//! CLIP score with user-supplied Hugging Face CLIP weights.

pub mod config;
mod encoder;
pub mod model;
pub mod preprocess;
pub mod score;

pub use config::ClipConfig;
pub use model::ClipModel;
pub use preprocess::ClipPreprocess;
pub use score::{cosine, ClipScorer, CLIP_HINT};

//! The Efficient U-Nets of the cascade (Imagen App. B) and their analytic size.

mod attention;
mod config;
mod embeddings;
mod resample;
mod resblock;
mod summary;
#[allow(clippy::module_inception)]
mod unet;

pub use attention::{Attention, TextContext, TransformerBlock};
pub use config::{AttnKind, UNetConfig};
pub use embeddings::{LevelEmbedding, TextPool};
pub use resample::{Downsample, Upsample};
pub use resblock::ResnetBlock;
pub use summary::{summarize, BlockSummary, ModelSummary};
pub use unet::{conv_weights_to_channels_last, to_channels_last, UNet};

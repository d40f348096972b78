//! Text conditioning: the `[text]` config section, the three modes (frozen-cached,
//! frozen-online, finetune) behind one [`TextConditioner`], and the encoder identity that the
//! embedding cache records.

pub mod conditioner;
pub mod config;
pub mod embed;
pub mod encode;
pub mod identity;
pub mod prompts;

pub use conditioner::{TextConditioner, TEXT_ENCODER_GROUP};
pub use config::{TextConfig, TextDtype, TextMode};
pub use encode::{encode_captions, Encoded};

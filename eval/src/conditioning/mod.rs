//! Conditioning accuracy on the synthetic scenes: does a generated image show the colour, shape,
//! size and position its caption asked for?

pub mod accuracy;
pub mod scorer;
pub mod spec;

pub use accuracy::{AccuracyRates, ConditioningAccuracy};
pub use scorer::{detect, score, AttributeMatch, Detection};
pub use spec::{Background, Colour, Position, SceneAttributes, Shape, Size};

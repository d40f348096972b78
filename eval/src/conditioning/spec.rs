//! The synthetic scene vocabulary (the shared scene spec): one filled shape of a palette colour on
//! a plain background; captions "a {size} {colour} {shape} in the {position} corner on a
//! {background} background" ("in the center" for the centre).

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word used in captions and metadata.
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// The inverse of [`Self::word`].
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.word() == word)
            }
        }
    };
}

vocabulary!(
    /// Fill colour of the shape.
    Colour { Red = "red", Green = "green", Blue = "blue", Yellow = "yellow", Purple = "purple", Orange = "orange" }
);
vocabulary!(
    /// Background fill.
    Background { White = "white", Black = "black", Gray = "gray" }
);
vocabulary!(
    /// Circle inscribed in the box; square filling it; upward isosceles triangle with its apex
    /// at the box's top centre and its base on the box's bottom.
    Shape { Circle = "circle", Square = "square", Triangle = "triangle" }
);
vocabulary!(
    /// Side of the shape's box relative to the image side.
    Size { Small = "small", Large = "large" }
);
vocabulary!(
    /// Centre of the shape's box.
    Position { TopLeft = "top left", TopRight = "top right", BottomLeft = "bottom left", BottomRight = "bottom right", Center = "center" }
);

impl Colour {
    /// Exact sRGB of the spec.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 25, 25],
            Colour::Green => [25, 190, 25],
            Colour::Blue => [30, 60, 230],
            Colour::Yellow => [240, 220, 20],
            Colour::Purple => [150, 40, 200],
            Colour::Orange => [255, 140, 0],
        }
    }
}

impl Background {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::White => [255, 255, 255],
            Background::Black => [0, 0, 0],
            Background::Gray => [128, 128, 128],
        }
    }
}

impl Size {
    /// Box side as a fraction of the image side.
    pub fn box_fraction(self) -> f64 {
        match self {
            Size::Small => 0.25,
            Size::Large => 0.45,
        }
    }
}

impl Position {
    /// Box centre (x, y) in fractions of the image side, y downward.
    pub fn centre(self) -> (f64, f64) {
        match self {
            Position::TopLeft => (0.27, 0.27),
            Position::TopRight => (0.73, 0.27),
            Position::BottomLeft => (0.27, 0.73),
            Position::BottomRight => (0.73, 0.73),
            Position::Center => (0.5, 0.5),
        }
    }
}

/// The attributes of one scene (what its caption says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SceneAttributes {
    pub colour: Colour,
    pub shape: Shape,
    pub size: Size,
    pub position: Position,
    pub background: Background,
}

impl SceneAttributes {
    /// The spec's caption.
    pub fn caption(&self) -> String {
        let place = match self.position {
            Position::Center => "in the center".to_owned(),
            p => format!("in the {} corner", p.word()),
        };
        format!(
            "a {} {} {} {place} on a {} background",
            self.size.word(),
            self.colour.word(),
            self.shape.word(),
            self.background.word()
        )
    }

    /// Parses a caption written by [`Self::caption`]; `None` for any other text.
    pub fn from_caption(caption: &str) -> Option<Self> {
        let rest = caption.trim().strip_prefix("a ")?;
        let (head, rest) = rest.split_once(" in the ")?;
        let mut words = head.split(' ');
        let size = Size::parse(words.next()?)?;
        let colour = Colour::parse(words.next()?)?;
        let shape = Shape::parse(words.next()?)?;
        if words.next().is_some() {
            return None;
        }
        let (place, rest) = rest.split_once(" on a ")?;
        let position = match place {
            "center" => Position::Center,
            corner => Position::parse(corner.strip_suffix(" corner")?)
                .filter(|p| *p != Position::Center)?,
        };
        let background = Background::parse(rest.strip_suffix(" background")?)?;
        Some(Self { colour, shape, size, position, background })
    }

    /// Every scene of the spec (6 x 3 x 2 x 5 x 3 = 540).
    pub fn all() -> Vec<Self> {
        let mut all = Vec::new();
        for &colour in Colour::ALL {
            for &shape in Shape::ALL {
                for &size in Size::ALL {
                    for &position in Position::ALL {
                        for &background in Background::ALL {
                            all.push(Self { colour, shape, size, position, background });
                        }
                    }
                }
            }
        }
        all
    }
}

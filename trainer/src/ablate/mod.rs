//! `imagen ablate t5`: frozen against fine-tuned T5 on the same config, seed, data order and
//! budget (Imagen §2.1 freezes T5 and publishes no fine-tuning ablation), with loss curves and
//! samples side by side.

mod canvas;
mod plot;
mod report;
mod run;
mod side_by_side;

pub use canvas::Canvas;
pub use plot::{plot, save_png, Series, CURVE_COLOURS, PLOT_HEIGHT, PLOT_WIDTH};
pub use report::{AblationReport, ArmReport};
pub use run::{ablate_t5, read_losses, AblateOptions, Budget, ARMS};
pub use side_by_side::side_by_side;

use tch::{Device, Kind, Tensor};

use crate::native::to_device_async;

/// u8 NHWC pixels from the data loader -> f32 NCHW in [-1, 1] on `device`. The u8 bytes cross
/// to the device before the conversion (a quarter of the f32 traffic), without a stall.
pub fn images_to_tensor(pixels: &[u8], n: usize, side: u32, device: Device) -> Tensor {
    let side = side as i64;
    to_device_async(&Tensor::from_slice(pixels).view([n as i64, side, side, 3]), device)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .contiguous()
        / 127.5
        - 1.0
}

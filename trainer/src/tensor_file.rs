//! Reading safetensors files through a memory map: the tensors are copied out of the mapped
//! pages one at a time, so a load holds the tensors once, not also the whole file in a buffer
//! (tch's `Tensor::read_safetensors` reads the file into memory first, twice the host memory of a
//! checkpoint's 16 GB of optimizer state on every rank at once).

use std::fs::File;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

/// The libtorch kind of a safetensors dtype, where there is one.
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F64 => Kind::Double,
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Every tensor of the file at `path`, on the CPU, in the file's order; the error says why (the
/// caller names the file).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: the file is only read. Checkpoint files are written once under a temporary name and
    // renamed into place; a file changed under the map would at worst give wrong values, which
    // the caller's digest check catches.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let tensors = SafeTensors::deserialize(&mmap).map_err(|e| e.to_string())?;
    let mut named: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
    named.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
    named
        .into_iter()
        .map(|(name, view)| {
            let kind = kind_of(view.dtype())
                .ok_or_else(|| format!("{name}: unsupported dtype {:?}", view.dtype()))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| format!("{name}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}

//! Creating parameters, trained or frozen, and remembering their names for the loader.

use std::cell::RefCell;

use tch::{nn, Kind, Tensor};

/// Collects every parameter an encoder creates, by full VarStore name, so that loading can
/// report missing and unexpected names without access to the VarStore itself.
pub(crate) type ParamSink = RefCell<Vec<(String, Tensor)>>;

/// How the parameters of one module are created.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a> {
    pub sink: &'a ParamSink,
    pub trainable: bool,
    /// Dtype of the created parameters.
    pub kind: Kind,
}

impl Params<'_> {
    /// Adds the parameter `name` of shape `dims` under `path`, zero-filled (weights are loaded
    /// or initialised afterwards). A frozen parameter is still a VarStore variable, so it is
    /// saved and loaded with the rest, but it is absent from `trainable_variables()` and gets
    /// no gradient.
    pub fn add(self, path: &nn::Path, name: &str, dims: &[i64]) -> Tensor {
        let t = path.add(name, Tensor::zeros(dims, (self.kind, path.device())), self.trainable);
        self.sink.borrow_mut().push((path.path(name), t.shallow_clone()));
        t
    }
}

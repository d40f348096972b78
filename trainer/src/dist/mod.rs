//! Multi-process training: rendezvous and collectives through libtorch's c10d.

pub mod store;

pub use store::{StoreOptions, TcpStore};

//! c10d's `TCPStore`: the key-value store that workers rendezvous on (the same one torchrun
//! and PyTorch DDP use), bound through the native shim.

use std::ffi::CString;
use std::time::Duration;

use crate::error::{Result, TrainerError};
use crate::native::{self, check, ImagenStore};

/// How to open a store: rank 0 serves, the others connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub host: String,
    /// 0 lets the server pick a free port (read it back with [`TcpStore::port`]).
    pub port: u16,
    pub is_server: bool,
    /// Number of workers the server waits for, when known.
    pub num_workers: Option<usize>,
    pub wait_workers: bool,
    /// Bounds connecting and each `get`.
    pub timeout: Duration,
    /// Put in front of every key (a job's keys in a store that others share).
    pub key_prefix: String,
}

impl StoreOptions {
    pub fn server(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
            is_server: true,
            num_workers: None,
            wait_workers: false,
            timeout: Duration::from_secs(300),
            key_prefix: String::new(),
        }
    }

    pub fn client(host: &str, port: u16) -> Self {
        Self { is_server: false, ..Self::server(host, port) }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.key_prefix = prefix.to_owned();
        self
    }
}

/// A connection to a c10d TCPStore (and, on the server, the store itself).
pub struct TcpStore {
    handle: *mut ImagenStore,
    prefix: String,
}

// SAFETY: c10d::TCPStore serialises access to its socket internally.
unsafe impl Send for TcpStore {}
unsafe impl Sync for TcpStore {}

pub(crate) fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| TrainerError::Native {
        what: what.to_owned(),
        message: format!("{s:?} contains a NUL byte"),
    })
}

/// Milliseconds for c10d, which adds them to the current time: capped at
/// [`super::LONGEST_WAIT`].
pub(crate) fn duration_ms(d: Duration) -> i64 {
    d.min(super::LONGEST_WAIT).as_millis() as i64
}

impl TcpStore {
    pub fn open(opts: &StoreOptions) -> Result<Self> {
        let host = c_string("store host", &opts.host)?;
        let mut handle = std::ptr::null_mut();
        let what = format!(
            "TCPStore {} {}:{}",
            if opts.is_server { "serving on" } else { "connecting to" },
            opts.host,
            opts.port
        );
        // SAFETY: pointers are valid for the call; the handle is owned by the returned value.
        check(&what, unsafe {
            native::imagen_store_new(
                host.as_ptr(),
                opts.port,
                opts.is_server,
                opts.num_workers.map_or(-1, |n| n as i64),
                opts.wait_workers,
                duration_ms(opts.timeout),
                &mut handle,
            )
        })?;
        Ok(Self { handle, prefix: opts.key_prefix.clone() })
    }

    /// The port the store listens on (useful after asking for port 0).
    pub fn port(&self) -> u16 {
        // SAFETY: the handle is live.
        unsafe { native::imagen_store_port(self.handle) }
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = c_string("store key", &self.full_key(key))?;
        // SAFETY: pointers are valid for the call.
        check(&format!("store set {key:?}"), unsafe {
            native::imagen_store_set(self.handle, k.as_ptr(), value.as_ptr(), value.len())
        })
    }

    /// Waits (up to the timeout) for `key` to be set, and returns its value.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = c_string("store key", &self.full_key(key))?;
        let mut data = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: out pointers are valid; on success data is a malloc'd buffer of len bytes.
        check(&format!("store get {key:?}"), unsafe {
            native::imagen_store_get(self.handle, k.as_ptr(), &mut data, &mut len)
        })?;
        let value = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        unsafe { native::imagen_free(data.cast()) };
        Ok(value)
    }

    /// Atomically adds `delta` to the integer at `key` and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = c_string("store key", &self.full_key(key))?;
        let mut out = 0i64;
        // SAFETY: pointers are valid for the call.
        check(&format!("store add {key:?}"), unsafe {
            native::imagen_store_add(self.handle, k.as_ptr(), delta, &mut out)
        })?;
        Ok(out)
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let k = c_string("store key", &self.full_key(key))?;
        let mut deleted = false;
        // SAFETY: pointers are valid for the call.
        check(&format!("store delete {key:?}"), unsafe {
            native::imagen_store_delete(self.handle, k.as_ptr(), &mut deleted)
        })?;
        Ok(deleted)
    }

    /// Bounds every later `get`.
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        // SAFETY: the handle is live.
        check("store set timeout", unsafe {
            native::imagen_store_set_timeout(self.handle, duration_ms(timeout))
        })
    }

    pub(crate) fn handle(&self) -> *mut ImagenStore {
        self.handle
    }

    /// What every key of this connection is put behind.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Whether `key` is set, without waiting.
    pub fn contains(&self, key: &str) -> Result<bool> {
        let k = c_string("store key", &self.full_key(key))?;
        let mut present = false;
        // SAFETY: pointers are valid for the call.
        check(&format!("store check {key:?}"), unsafe {
            native::imagen_store_check(self.handle, k.as_ptr(), &mut present)
        })?;
        Ok(present)
    }
}

impl Drop for TcpStore {
    fn drop(&mut self) {
        // SAFETY: the handle came from imagen_store_new and is released once.
        unsafe { native::imagen_store_free(self.handle) }
    }
}

//! c10d's `TCPStore`: the key-value rendezvous every rank connects to, served
//! by rank 0 at `MASTER_ADDR:MASTER_PORT`.
use std::ffi::CString;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{DistError, Result};
use crate::ffi;

pub struct TcpStore {
    raw: NonNull<ffi::Store>,
}

// SAFETY: c10d's TCPStore is safe to use from any thread.
unsafe impl Send for TcpStore {}
unsafe impl Sync for TcpStore {}

fn c_string(text: &str, what: &str) -> Result<CString> {
    CString::new(text).map_err(|_| DistError::Invalid(format!("{what} {text:?} contains a NUL")))
}

pub(crate) fn millis(timeout: Duration) -> i64 {
    timeout.as_millis().clamp(1, i64::MAX as u128) as i64
}

impl TcpStore {
    /// Serves the store (`is_server`, rank 0) or connects to it, waiting up
    /// to `timeout` for the server.
    pub fn new(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let c_host = c_string(host, "host")?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: the arguments are valid for the call; `raw` is written on
        // success only.
        let answer = unsafe {
            ffi::rgpt_store_new(
                c_host.as_ptr(),
                port,
                is_server.into(),
                world_size.try_into().unwrap_or(i32::MAX),
                millis(timeout),
                &mut raw,
            )
        };
        ffi::check(answer).map_err(|message| {
            if is_server && message.contains("already in use") {
                DistError::PortInUse {
                    host: host.to_string(),
                    port,
                }
            } else {
                DistError::C10d(format!("rendezvous at {host}:{port}: {message}"))
            }
        })?;
        let raw = NonNull::new(raw)
            .ok_or_else(|| DistError::C10d("TCPStore: the shim returned no store".into()))?;
        Ok(TcpStore { raw })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key = c_string(key, "store key")?;
        // SAFETY: `value` is valid for `len` bytes during the call.
        let answer = unsafe {
            ffi::rgpt_store_set(self.raw.as_ptr(), key.as_ptr(), value.as_ptr(), value.len())
        };
        ffi::check(answer).map_err(DistError::C10d)
    }

    /// The value of `key`, waiting (up to the store's timeout) until a rank
    /// sets it.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let key = c_string(key, "store key")?;
        let (mut value, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: on success the shim hands over a malloc'd buffer of `len`
        // bytes, freed below.
        let answer =
            unsafe { ffi::rgpt_store_get(self.raw.as_ptr(), key.as_ptr(), &mut value, &mut len) };
        ffi::check(answer).map_err(DistError::C10d)?;
        let bytes = unsafe { std::slice::from_raw_parts(value, len) }.to_vec();
        unsafe { ffi::rgpt_dist_free_bytes(value) };
        Ok(bytes)
    }

    pub(crate) fn raw(&self) -> *mut ffi::Store {
        self.raw.as_ptr()
    }
}

impl Drop for TcpStore {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rgpt_store_new and is freed once.
        unsafe { ffi::rgpt_store_free(self.raw.as_ptr()) }
    }
}

//! The shim's C interface (`shim/c10d.h`).
use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct Store {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}

extern "C" {
    pub fn rgpt_dist_free_error(message: *mut c_char);
    pub fn rgpt_dist_free_bytes(value: *mut u8);

    pub fn rgpt_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
    ) -> *mut c_char;
    pub fn rgpt_store_set(
        store: *mut Store,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn rgpt_store_get(
        store: *mut Store,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    pub fn rgpt_store_free(store: *mut Store);

    pub fn rgpt_group_gloo_new(
        store: *mut Store,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        hostname: *const c_char,
        out: *mut *mut Group,
    ) -> *mut c_char;
    #[cfg(rgpt_nccl)]
    pub fn rgpt_group_nccl_new(
        store: *mut Store,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        device: c_int,
        out: *mut *mut Group,
    ) -> *mut c_char;
    pub fn rgpt_group_free(group: *mut Group);

    pub fn rgpt_all_reduce(
        group: *mut Group,
        tensor: *mut c_void,
        op: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn rgpt_broadcast(
        group: *mut Group,
        tensor: *mut c_void,
        root: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn rgpt_all_gather(
        group: *mut Group,
        output: *mut c_void,
        input: *mut c_void,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn rgpt_reduce_scatter(
        group: *mut Group,
        output: *mut c_void,
        input: *mut c_void,
        op: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn rgpt_barrier(group: *mut Group, timeout_ms: i64) -> *mut c_char;
}

/// The shim's answer: `Ok` for a null pointer, else its message (freed).
pub fn check(message: *mut c_char) -> Result<(), String> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null answer is a NUL-terminated string the shim
    // allocated with malloc, ours to free.
    let text = unsafe { std::ffi::CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { rgpt_dist_free_error(message) };
    Err(text)
}

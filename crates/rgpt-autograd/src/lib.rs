//! What libtorch's autograd can do and tch does not expose. Today:
//! activation checkpointing ([`checkpoint`]), which trades compute for
//! memory the way `torch.utils.checkpoint` does, so a model's activations
//! need not all be kept for the backward pass.
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::Tensor;
use torch_sys::C_tensor;

type Run = extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> *mut c_void;
type Drop = extern "C" fn(*mut c_void);

extern "C" {
    fn rgpt_checkpoint(
        data: *mut c_void,
        run: Run,
        drop: Drop,
        input: *mut c_void,
        output: *mut *mut c_void,
    ) -> *mut c_char;
    fn rgpt_autograd_free_error(error: *mut c_char);
    fn rgpt_autograd_fail(error: *mut c_void, message: *const c_char, len: usize);
}

type Segment = Box<dyn Fn(&Tensor) -> Tensor>;

/// `segment(input)`, recorded for autograd without its intermediate
/// tensors: the backward pass runs `segment` again from `input` and
/// back-propagates through that (PyTorch's reentrant
/// `torch.utils.checkpoint`). Gradients reach `input` and every tensor the
/// segment uses that needs one (its parameters), as without checkpointing.
/// Outside a recorded graph (`tch::no_grad`) it is `segment(input)`.
///
/// The segment owns what it uses (it may run again at any later backward,
/// on the thread autograd runs it on) and must compute the same thing each
/// time: no dropout without a fixed generator.
///
/// Panics, as tch's own operations do, when the segment panics or libtorch
/// fails; in the backward pass that surfaces from `backward()`.
pub fn checkpoint(input: &Tensor, segment: impl Fn(&Tensor) -> Tensor + 'static) -> Tensor {
    let data = Box::into_raw(Box::new(Box::new(segment) as Segment)) as *mut c_void;
    let mut output = std::ptr::null_mut();
    // SAFETY: `data` is the boxed segment `run` and `drop` expect; the shim
    // takes ownership of it and frees it through `drop` exactly once.
    // `input` is a live tensor, borrowed for the call.
    let error =
        unsafe { rgpt_checkpoint(data, run, drop, input.as_ptr() as *mut c_void, &mut output) };
    if !error.is_null() {
        // SAFETY: a NUL-terminated message the shim allocated for us.
        let text = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        unsafe { rgpt_autograd_free_error(error) };
        panic!("activation checkpointing: {text}");
    }
    // SAFETY: on success `output` is a new at::Tensor* for us to own.
    unsafe { Tensor::from_ptr(output as *mut C_tensor) }
}

extern "C" fn run(data: *mut c_void, input: *mut c_void, error: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the segment `checkpoint` boxed, alive until `drop`;
    // `input` is a new at::Tensor* the shim hands over.
    let segment = unsafe { &*(data as *const Segment) };
    let input = unsafe { Tensor::from_ptr(input as *mut C_tensor) };
    match catch_unwind(AssertUnwindSafe(|| segment(&input))) {
        Ok(mut output) => {
            let pointer = output.as_mut_ptr() as *mut c_void;
            // The shim takes the at::Tensor* and deletes it.
            std::mem::forget(output);
            pointer
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the segment panicked");
            // SAFETY: `error` is the shim's message slot for this call.
            unsafe { rgpt_autograd_fail(error, text.as_ptr() as *const c_char, text.len()) };
            std::ptr::null_mut()
        }
    }
}

extern "C" fn drop(data: *mut c_void) {
    // SAFETY: called once, by the shim, when nothing can run the segment.
    let _ = unsafe { Box::from_raw(data as *mut Segment) };
}

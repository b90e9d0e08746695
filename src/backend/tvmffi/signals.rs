//! The process's SIGSEGV disposition. libtvm_ffi.so installs its own
//! handler when it is loaded (a constructor in backtrace.cc); the backend
//! puts back the one the process had (Rust's, or libFuzzer's/ASan's, which
//! save the crashing input).

use std::ffi::{CStr, c_void};

/// The SIGSEGV disposition now.
pub(super) fn sigsegv() -> libc::sigaction {
    // SAFETY: a query only (null new action); `old` is plain data.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old);
        old
    }
}

/// The file (executable or library) whose code handles SIGSEGV now, or
/// "" for the default disposition.
pub fn sigsegv_handler_owner() -> String {
    let handler = sigsegv().sa_sigaction;
    // SAFETY: dladdr only reads the loader's tables into `info`; the name
    // it returns is a NUL-terminated string the loader keeps.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if handler == 0
            || libc::dladdr(handler as *const c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return String::new();
        }
        CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    }
}

/// Put back a disposition read earlier with [`sigsegv`].
pub(super) fn set_sigsegv(a: &libc::sigaction) {
    // SAFETY: `a` is a disposition read back from sigaction itself.
    unsafe { libc::sigaction(libc::SIGSEGV, a, std::ptr::null_mut()) };
}

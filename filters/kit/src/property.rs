//! Stream properties over the proxy-wasm ABI (the SDK's `set_property` panics on any status
//! but Ok). Envoy keeps a property `name` as the filter state `wasm.<name>`, which its access
//! log reads with `%FILTER_STATE(wasm.<name>:PLAIN)%`. Kong answers NotFound for names it
//! does not know and logs an error, so the callers skip it there.

use crate::error::HostError;

mod abi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
    }
}

/// Sets the property `name` (one path element) of the current stream.
pub fn set(name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: valid slices for the duration of the call.
    HostError::check(unsafe {
        abi::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Each (property, value) pair, in order.
pub fn set_all(fields: &[(&str, String)]) {
    for (name, value) in fields {
        let _ = set(name, value);
    }
}

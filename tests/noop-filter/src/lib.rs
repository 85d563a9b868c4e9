//! A benchmark-only filter with no logic: every callback returns Continue. Measured beside the
//! real filters, it separates what the proxy charges per Proxy-Wasm filter (context, callbacks,
//! header copies) from what a cxgate filter's own work costs.

#[cfg(feature = "proxy")]
mod shell {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;
    impl Context for Root {}
    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream))
        }
    }

    struct Stream;
    impl Context for Stream {}
    impl HttpContext for Stream {}
}

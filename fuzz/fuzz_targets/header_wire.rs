//! The proxy-wasm header map wire format as the runner reads it: a map that decodes writes
//! back out to one that decodes to the same headers.
#![no_main]

use cxgate_kit::wire::serialize_pairs;
use cxgate_model::exchange::HeaderView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(view) = HeaderView::from_wire(data) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = view.pairs().collect();
    let again = HeaderView::from_wire(&serialize_pairs(&pairs)).expect("our own encoding decodes");
    let second: Vec<(&str, &str)> = again.pairs().collect();
    assert_eq!(pairs, second);
    for (k, _) in &pairs {
        assert_eq!(*k, k.to_ascii_lowercase(), "names are lowercased");
    }
});

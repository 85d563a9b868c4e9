//! What the sidecar publishes, as the filters decode it from shared data and its state API:
//! a stamped value round-trips, and a snapshot that decodes encodes to one that decodes the same.
#![no_main]

use cxgate_kit::shared::Stamped;
use cxgate_state::{Snapshot, TokenState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(s) = Stamped::decode(data) {
        assert_eq!(s.encode(), data, "a stamped value round-trips");
        let _ = serde_json::from_slice::<TokenState>(&s.payload);
    }
    if let Ok(snap) = serde_json::from_slice::<Snapshot>(data) {
        let text = serde_json::to_vec(&snap).expect("encodes");
        let again: Snapshot = serde_json::from_slice(&text).expect("decodes again");
        assert_eq!(again, snap);
    }
});

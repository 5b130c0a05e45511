//! Decodes arbitrary bytes as an event and as each stored record type.
//! Any input must give a value or a typed error: never a panic, a hang or an
//! allocation beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workflow_store::backend::QueueEntry;
use workflow_store::RunRecord;
use workflow_store::{codec, HookRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = codec::decode_event(data) {
        // What decodes must encode again and decode to the same value.
        let bytes = codec::encode_event(&event).expect("re-encode");
        assert_eq!(codec::decode_event(&bytes).expect("re-decode"), event);
    }
    let _ = codec::decode_record::<RunRecord>(data);
    let _ = codec::decode_record::<HookRecord>(data);
    let _ = codec::decode_record::<QueueEntry>(data);
});

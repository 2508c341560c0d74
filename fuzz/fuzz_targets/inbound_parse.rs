//! Any bytes into the inbound parser: it must return Ok or Err, never panic,
//! and whatever records it returns must serialize and parse back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3_event_core::inbound::{self, Inbound};
use s3_event_core::Notification;

fuzz_target!(|data: &[u8]| {
    if let Ok(Inbound::Records { notification, .. }) = inbound::parse(data) {
        let bytes = notification.to_vec();
        let again = Notification::from_slice(&bytes).expect("re-parse of our own output");
        assert_eq!(again, notification);
        for r in &notification.records {
            let _ = r.decoded_key();
            let _ = r.to_cloudevent();
        }
    }
});

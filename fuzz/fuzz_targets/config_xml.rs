//! Any text into the NotificationConfiguration XML parser (which validates):
//! Ok or Err, never a panic; an accepted configuration builds a RuleSet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3_event_core::NotificationConfiguration;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = NotificationConfiguration::from_xml(text) {
            let _ = cfg.to_xml();
        }
    }
});

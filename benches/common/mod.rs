//! Rules and workload shared by the routing benches (`rules`, `notifier`).

use s3_event::core::{Arn, EventMask, EventName, NotificationRule};

/// 100 rules: 20 tenants with 5 rules each. `target(i)` gives the destination
/// of a tenant's `i`-th-from-tenant destination (tenant + rule index); the
/// fifth rule of each tenant is `fifth = (name, events)` on the tenant's
/// whole prefix.
pub fn tenant_rules(
    target: impl Fn(usize) -> Arn,
    fifth: (&str, EventMask),
) -> Vec<NotificationRule> {
    let created = EventMask::from_pattern("s3:ObjectCreated:*").unwrap();
    let removed = EventMask::from_pattern("s3:ObjectRemoved:*").unwrap();
    let put = EventName::ObjectCreatedPut | EventName::ObjectCreatedCompleteMultipartUpload;
    let mut rules = Vec::new();
    for t in 0..20 {
        let target = |k: usize| target(t + k);
        let base = format!("tenant-{t:02}/");
        let id = |what: &str| format!("{what}-{t:02}");
        rules.push(
            NotificationRule::new(id("images"), created, target(0))
                .with_prefix(format!("{base}images/"))
                .with_suffix(".jpg"),
        );
        rules.push(
            NotificationRule::new(id("videos"), created, target(1))
                .with_prefix(format!("{base}videos/"))
                .with_suffix(".mp4"),
        );
        rules.push(
            NotificationRule::new(id("logs"), put, target(2))
                .with_prefix(format!("{base}logs/"))
                .with_suffix(".gz"),
        );
        rules.push(
            NotificationRule::new(id("deletes"), removed, target(3)).with_prefix(base.clone()),
        );
        rules.push(NotificationRule::new(id(fifth.0), fifth.1, target(4)).with_prefix(base));
    }
    rules
}

/// `n` (event name, key) pairs in a realistic mix: most events are puts,
/// keys hit and miss the tenants' rules. Deterministic (xorshift).
pub fn workload(n: usize) -> Vec<(EventName, String)> {
    let events = [
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedCompleteMultipartUpload,
        EventName::ObjectCreatedCopy,
        EventName::ObjectRemovedDelete,
        EventName::ObjectRemovedDeleteMarkerCreated,
        EventName::ObjectAccessedGet,
        EventName::ObjectRestoreCompleted,
    ];
    let dirs = ["images", "videos", "logs", "tmp", "images/thumbs"];
    let exts = [".jpg", ".mp4", ".gz", ".txt", ".png"];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    (0..n)
        .map(|_| {
            let e = events[next() % events.len()];
            let key = match next() % 8 {
                // Keys outside every tenant.
                0 => format!(
                    "shared/{}/file-{}{}",
                    dirs[next() % 5],
                    next() % 10_000,
                    exts[next() % 5]
                ),
                _ => format!(
                    "tenant-{:02}/{}/2025/06/{:02}/object-{}{}",
                    next() % 24,
                    dirs[next() % 5],
                    next() % 30,
                    next() % 100_000,
                    exts[next() % 5]
                ),
            };
            (e, key)
        })
        .collect()
}

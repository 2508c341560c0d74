//! A target that counts the events it receives and answers at once, for
//! benches that measure what is in front of a target.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use s3_event::core::{EventRecord, Target, TargetError, TargetId};

/// Counts the events it receives (`seen`, written with `Release`).
#[derive(Debug)]
pub struct Counting {
    pub id: TargetId,
    pub seen: AtomicU64,
}

impl Counting {
    pub fn new(id: TargetId) -> Self {
        Counting {
            id,
            seen: AtomicU64::new(0),
        }
    }
}

// `Target` is an `#[async_trait]` trait; implemented by hand (boxed future)
// as in `benches/notifier.rs`.
impl Target for Counting {
    fn id(&self) -> &TargetId {
        &self.id
    }

    fn send_batch<'a, 'b, 'f>(
        &'a self,
        events: &'b [EventRecord],
    ) -> Pin<Box<dyn Future<Output = Result<(), TargetError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.seen.fetch_add(events.len() as u64, Ordering::Release);
            Ok(())
        })
    }

    fn is_active<'a, 'f>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = Result<bool, TargetError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(true) })
    }

    fn max_batch(&self) -> usize {
        256
    }
}

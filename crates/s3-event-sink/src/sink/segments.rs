//! After an upload: the uploaded frame, and deleting the spool segments
//! that hold nothing left to upload.

use super::*;

impl Inner {
    /// Marks a spooled batch uploaded and deletes the spool segments that no
    /// longer hold anything to upload.
    pub(super) async fn uploaded(&self, key_seq: u64, seqs: &[u64], numbers_end: Option<u64>) {
        let Some(spool) = &self.spool else { return };
        let mut attempt: u32 = 0;
        loop {
            let written = relock(spool).uploaded(key_seq, seqs, numbers_end);
            let Err(e) = written else { break };
            // Until it is written, the batch's segments stay (a restart
            // would upload it again, finding its object already there).
            if self.closed.load(Ordering::Acquire) && attempt >= 3 {
                tracing::error!(error = %e, key_seq, "spool: writing an uploaded frame failed; giving up at shutdown");
                return;
            }
            tracing::error!(error = %e, key_seq, "spool: writing an uploaded frame failed; retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
        self.delete_segments(spool).await;
    }

    /// Deletes the segments that hold nothing left to upload, oldest first,
    /// by one task at a time: uploads finishing together must not delete
    /// their segments in whatever order their fsyncs return, or a crash
    /// could leave an older segment whose batches' close and uploaded frames
    /// were in a deleted newer one (its events would be uploaded again, under
    /// a key that may be an uploaded batch's: that object would be
    /// overwritten with part of its events). A task that finds another at
    /// work leaves its request to it.
    pub(super) async fn delete_segments(&self, spool: &Mutex<Spool>) {
        self.delete_requested.store(true, Ordering::SeqCst);
        loop {
            if self
                .deleting
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return;
            }
            {
                let _turn = DeleteTurn(&self.deleting);
                while self.delete_requested.swap(false, Ordering::SeqCst) {
                    if !self.delete_pass(spool).await {
                        return;
                    }
                }
            }
            // A request made while this task still had the turn.
            if !self.delete_requested.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Deletes what [`Spool::deletable`] lists once the uploaded frames are
    /// durable; false if that failed (the segments are kept for a later try).
    pub(super) async fn delete_pass(&self, spool: &Mutex<Spool>) -> bool {
        let (through, token, log) = {
            let mut s = relock(spool);
            match s.deletable() {
                Ok(Some((through, token))) => (through, token, s.log()),
                Ok(None) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "spool: saving the delivery numbers failed; segments kept");
                    return false;
                }
            }
        };
        #[cfg(test)]
        if self.hold_deletes.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if let Err(e) = self.synced(&log, token).await {
            tracing::error!(error = %e, "spool: fsync failed; segments kept");
            return false;
        }
        let removed = tokio::task::spawn_blocking(move || log.remove_through(through)).await;
        relock(spool).deleted();
        match removed {
            Ok(Ok(n)) => {
                if n > 0 {
                    self.space.notify_waiters();
                }
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "spool: deleting uploaded segments failed; kept for a later try");
                false
            }
            Err(_) => false,
        }
    }
}

/// Holds [`Inner`]'s segment-deletion turn; gives it back when dropped (also
/// when the task is cancelled).
pub(super) struct DeleteTurn<'a>(&'a AtomicBool);

impl Drop for DeleteTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

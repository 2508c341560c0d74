//! The durable dead-letter store of a target: a [`QueueStore`] in
//! `<queue_dir>/<type>-<id>/dead-letter` whose entries are
//! `{"error": "...", "record": {...}}` (an entry that could not even be
//! decoded as a record is kept as `{"error": "...", "entry": "..."}`).
//! Bounded by [`TargetOptions::dead_letter_queue_limit`]: the oldest dead
//! letters are discarded first, logged and counted.
//!
//! [`TargetOptions::dead_letter_queue_limit`]: super::TargetOptions::dead_letter_queue_limit

use std::path::Path;
use std::sync::Arc;

use s3_event_core::log::Faults;
use s3_event_core::EventRecord;

use super::DeadLetter;
use crate::queue_store::{QueueStore, QueueStoreOptions, Seq};
use crate::{Error, Result};

/// A dead letter as stored.
#[derive(Debug)]
pub(super) enum Letter {
    /// A record and why it was dead-lettered.
    Record(Box<DeadLetter>),
    /// Bytes that were not a record (kept as lossy UTF-8).
    Undecodable {
        /// Why.
        error: String,
        /// The bytes.
        entry: String,
    },
}

impl Letter {
    /// As a [`DeadLetter`]; an undecodable entry has a default record and
    /// its bytes in the error.
    pub fn into_dead_letter(self) -> DeadLetter {
        match self {
            Letter::Record(d) => *d,
            Letter::Undecodable { error, entry } => DeadLetter {
                record: EventRecord::default(),
                error: format!("{error}; entry: {entry}"),
            },
        }
    }
}

/// Encodes a dead letter of `record`.
pub(super) fn encode(record: &EventRecord, error: &str) -> Vec<u8> {
    // Serializing an EventRecord or a string cannot fail.
    let mut out = br#"{"error":"#.to_vec();
    out.extend(serde_json::to_vec(error).expect("a string serializes"));
    out.extend_from_slice(br#","record":"#);
    out.extend(serde_json::to_vec(record).expect("a record serializes"));
    out.push(b'}');
    out
}

/// Encodes a dead letter of bytes that are not a record.
pub(super) fn encode_undecodable(entry: &[u8], error: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": error,
        "entry": String::from_utf8_lossy(entry),
    }))
    .expect("JSON values serialize")
}

/// Decodes a stored entry: a dead letter, or (from a queue, or from the
/// versions that stored bare records as dead letters) a bare record.
pub(super) fn decode(bytes: &[u8]) -> Letter {
    // What `encode` and `encode_undecodable` write starts so; a record
    // never does (its own fields come first).
    if bytes.starts_with(br#"{"error":"#) || bytes.starts_with(br#"{"entry":"#) {
        if let Some(letter) = decode_wrapped(bytes) {
            return letter;
        }
    }
    match EventRecord::from_slice(bytes) {
        Ok(record) => Letter::Record(Box::new(DeadLetter {
            record,
            error: "dead-lettered by an earlier version (no error recorded)".to_owned(),
        })),
        Err(e) => Letter::Undecodable {
            error: format!("not an event record: {e}"),
            entry: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

fn decode_wrapped(bytes: &[u8]) -> Option<Letter> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let o = value.as_object()?;
    let error = o.get("error")?.as_str()?.to_owned();
    if o.len() != 2 {
        return None;
    }
    if let Some(entry) = o.get("entry") {
        return Some(Letter::Undecodable {
            error,
            entry: entry.as_str()?.to_owned(),
        });
    }
    let record = o.get("record")?;
    Some(
        match serde_json::from_value::<EventRecord>(record.clone()) {
            Ok(record) => Letter::Record(Box::new(DeadLetter { record, error })),
            Err(e) => Letter::Undecodable {
                error: format!("{error}; record does not decode: {e}"),
                entry: record.to_string(),
            },
        },
    )
}

/// A bounded durable dead-letter store.
#[derive(Debug)]
pub(super) struct DeadLetterStore {
    store: QueueStore,
    limit: usize,
}

impl DeadLetterStore {
    /// Releases the store's directory (see [`QueueStore::release`]).
    pub fn release(&self) -> Result<()> {
        self.store.release()
    }

    /// Opens the store in `dir`.
    pub fn open(dir: &Path, limit: usize, faults: Option<Arc<Faults>>) -> Result<Self> {
        let store = QueueStore::open(
            dir,
            QueueStoreOptions {
                queue_limit: usize::MAX,
                faults,
                ..QueueStoreOptions::default()
            },
        )?;
        Ok(DeadLetterStore {
            store,
            limit: limit.max(1),
        })
    }

    /// Appends encoded dead letters and waits until they are durable.
    /// Beyond the limit the oldest are discarded first (the stored ones,
    /// then the first of `letters`); returns how many.
    pub async fn append(&self, letters: &[Vec<u8>]) -> Result<u64> {
        let (letters, discarded) = self.make_room(letters)?;
        self.store.append_batch_synced(letters).await?;
        Ok(discarded)
    }

    /// [`Self::append`], blocking (start-up migration).
    pub fn append_blocking(&self, letters: &[Vec<u8>]) -> Result<u64> {
        let (letters, discarded) = self.make_room(letters)?;
        self.store.append_batch_durable(letters)?;
        Ok(discarded)
    }

    /// Discards the oldest stored letters so that `letters` fit; returns
    /// what of `letters` to append (its newest `limit`, when it alone is
    /// over) and how many were discarded in all.
    fn make_room<'a>(&self, letters: &'a [Vec<u8>]) -> Result<(&'a [Vec<u8>], u64)> {
        let skip = letters.len().saturating_sub(self.limit);
        let letters = &letters[skip..];
        let over = (self.store.len() + letters.len()).saturating_sub(self.limit);
        if over == 0 {
            return Ok((letters, skip as u64));
        }
        let oldest = self.store.peek(over)?;
        if let Some((last, _)) = oldest.last() {
            self.store.ack(*last)?;
        }
        Ok((letters, skip as u64 + oldest.len() as u64))
    }

    /// Up to `max` of the oldest dead letters, with their numbers.
    pub fn peek(&self, max: usize) -> Result<Vec<(Seq, Letter)>> {
        loop {
            match self.store.peek(max) {
                Ok(v) => return Ok(v.into_iter().map(|(s, b)| (s, decode(&b))).collect()),
                // Dropped and logged by the store; read past it.
                Err(Error::Corrupt { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the dead letters up to `seq`.
    pub fn ack(&self, seq: Seq) -> Result<()> {
        self.store.ack(seq)
    }

    /// Dead letters stored.
    pub fn len(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> EventRecord {
        EventRecord::from_slice(
            format!(
                r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"object":{{"key":"{key}"}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_over_the_limit_keeps_its_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path(), 3, None).unwrap();
        let letters = |keys: &[&str]| -> Vec<Vec<u8>> {
            keys.iter().map(|k| encode(&record(k), "boom")).collect()
        };
        assert_eq!(store.append_blocking(&letters(&["a", "b"])).unwrap(), 0);
        // Five more, with room for three: both stored ones and the
        // batch's first two go.
        let five = letters(&["c", "d", "e", "f", "g"]);
        assert_eq!(store.append_blocking(&five).unwrap(), 4);
        let kept: Vec<String> = store
            .peek(10)
            .unwrap()
            .into_iter()
            .map(|(_, l)| match l {
                Letter::Record(d) => d.record.key().unwrap().to_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kept, ["e", "f", "g"]);
    }

    #[test]
    fn letters_round_trip_and_bare_records_are_read() {
        let r = record("a");
        match decode(&encode(&r, "boom \"quoted\"")) {
            Letter::Record(d) => {
                assert_eq!((d.record, d.error.as_str()), (r.clone(), "boom \"quoted\""))
            }
            other => panic!("{other:?}"),
        }
        match decode(&serde_json::to_vec(&r).unwrap()) {
            Letter::Record(d) => {
                assert_eq!(d.record, r);
                assert!(d.error.contains("earlier version"), "{}", d.error);
            }
            other => panic!("{other:?}"),
        }
        match decode(&encode_undecodable(b"\xffnot json", "bad")) {
            Letter::Undecodable { error, entry } => {
                assert_eq!(error, "bad");
                assert!(entry.ends_with("not json"), "{entry}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(b"{"), Letter::Undecodable { .. }));
        assert!(matches!(decode(br#"{"error":"x"}"#), Letter::Record(_)));
    }

    #[test]
    fn the_oldest_are_discarded_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path(), 3, None).unwrap();
        let letters: Vec<Vec<u8>> = (0..5)
            .map(|i| encode(&record(&format!("k{i}")), "e"))
            .collect();
        assert_eq!(store.append_blocking(&letters[..2]).unwrap(), 0);
        assert_eq!(store.append_blocking(&letters[2..]).unwrap(), 2);
        let keys: Vec<String> = store
            .peek(10)
            .unwrap()
            .into_iter()
            .map(|(_, l)| l.into_dead_letter().record.key().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["k2", "k3", "k4"]);
        assert_eq!(store.len(), 3);
    }
}

//! The delivery manifest every object the sink uploads carries: how many
//! records it holds, which spool sequence numbers they are, the instance
//! that numbered them, and the SHA-256 of the bytes uploaded.
//!
//! It travels as user metadata of the object (`Attribute::Metadata`:
//! `x-amz-meta-*` headers on S3 and S3-compatible stores, the entry's
//! attributes in the in-memory store, a sidecar file beside the object in
//! the local-directory store, see [`LocalDir`](crate::LocalDir)), under
//! these keys:
//!
//! | key | value |
//! |---|---|
//! | `s3e-records` | the number of records |
//! | `s3e-sha256` | SHA-256 of the object's bytes, lowercase hex |
//! | `s3e-instance` | the sink's instance id (numbers are per instance) |
//! | `s3e-first-seq`, `s3e-last-seq` | the first and last delivery number of its records |
//! | `s3e-seq-runs` | when the numbers are not one consecutive run: the runs, as `offset+count` from the first, comma-separated |
//!
//! Numbers are present only when the sink spools (without a spool records
//! are not numbered). The spool gives each batch the next consecutive run
//! of *delivery numbers* when the batch is closed (see [`crate::spool`]'s
//! docs), so an object's numbers are one run and an instance's objects
//! together hold every number from its first to its last: a hole is a lost
//! batch. Objects written by versions before delivery numbers list the
//! spool's event sequence numbers instead, which may fall into several runs
//! (`s3e-seq-runs`, at most 1 KiB of text).
//!
//! [`Manifest::read`] reads it back; [`verify`](crate::verify()) checks a
//! range of objects against their manifests.

use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, GetOptions, ObjectStore};
use sha2::{Digest, Sha256};

/// The longest `s3e-seq-runs` value written; longer runs are left out (see
/// [`Manifest::runs_omitted`]).
const MAX_RUNS_TEXT: usize = 1024;

/// Metadata key: the number of records.
pub const META_RECORDS: &str = "s3e-records";
/// Metadata key: SHA-256 of the object's bytes, lowercase hex.
pub const META_SHA256: &str = "s3e-sha256";
/// Metadata key: the instance id that numbered the records.
pub const META_INSTANCE: &str = "s3e-instance";
/// Metadata key: the first sequence number.
pub const META_FIRST_SEQ: &str = "s3e-first-seq";
/// Metadata key: the last sequence number.
pub const META_LAST_SEQ: &str = "s3e-last-seq";
/// Metadata key: the runs of sequence numbers, when more than one.
pub const META_SEQ_RUNS: &str = "s3e-seq-runs";

/// One object's delivery manifest; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The number of records in the object.
    pub records: u64,
    /// SHA-256 of the object's bytes, lowercase hex.
    pub sha256: String,
    /// The instance id that numbered the records.
    pub instance: String,
    /// The records' spool sequence numbers as inclusive runs `(first,
    /// last)`, ascending; empty when the sink had no spool.
    pub runs: Vec<(u64, u64)>,
    /// The runs were too many to write: `runs` is the one span from the
    /// first to the last number, which also holds numbers of other objects.
    pub runs_omitted: bool,
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Inclusive runs of consecutive numbers in `seqs` (sorted first if not).
fn runs_of(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted;
    let seqs = if seqs.is_sorted() {
        seqs
    } else {
        sorted = seqs.to_vec();
        sorted.sort_unstable();
        &sorted
    };
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match runs.last_mut() {
            Some((_, last)) if s == *last + 1 => *last = s,
            Some((_, last)) if s == *last => {}
            _ => runs.push((s, s)),
        }
    }
    runs
}

impl Manifest {
    /// The manifest of an object holding `bytes`: `records` records whose
    /// sequence numbers are `seqs` (empty without a spool), numbered by
    /// `instance`.
    pub fn new(bytes: &[u8], records: u64, seqs: &[u64], instance: &str) -> Manifest {
        Manifest {
            records,
            sha256: sha256_hex(bytes),
            instance: instance.to_owned(),
            runs: runs_of(seqs),
            runs_omitted: false,
        }
    }

    /// The manifest of an object holding `bytes`: `records` records whose
    /// delivery numbers are `first ..= first + records - 1`, numbered by
    /// `instance`.
    pub fn numbered(bytes: &[u8], records: u64, first: u64, instance: &str) -> Manifest {
        Manifest {
            records,
            sha256: sha256_hex(bytes),
            instance: instance.to_owned(),
            runs: (records > 0)
                .then(|| (first, first + records - 1))
                .into_iter()
                .collect(),
            runs_omitted: false,
        }
    }

    /// The first sequence number.
    pub fn first_seq(&self) -> Option<u64> {
        self.runs.first().map(|r| r.0)
    }

    /// The last sequence number.
    pub fn last_seq(&self) -> Option<u64> {
        self.runs.last().map(|r| r.1)
    }

    /// `s3e-seq-runs`: `offset+count` per run, from the first number.
    fn runs_text(&self) -> Option<String> {
        let first = self.first_seq()?;
        if self.runs.len() < 2 {
            return None;
        }
        let parts: Vec<String> = self
            .runs
            .iter()
            .map(|(a, b)| format!("{}+{}", a - first, b - a + 1))
            .collect();
        Some(parts.join(","))
    }

    /// Adds the manifest to `attributes` as user metadata.
    pub fn add_to(&self, attributes: &mut Attributes) {
        let mut put = |k: &'static str, v: String| {
            attributes.insert(Attribute::Metadata(k.into()), AttributeValue::from(v));
        };
        put(META_RECORDS, self.records.to_string());
        put(META_SHA256, self.sha256.clone());
        put(META_INSTANCE, self.instance.clone());
        if let (Some(first), Some(last)) = (self.first_seq(), self.last_seq()) {
            put(META_FIRST_SEQ, first.to_string());
            put(META_LAST_SEQ, last.to_string());
            match self.runs_text() {
                Some(t) if t.len() <= MAX_RUNS_TEXT => put(META_SEQ_RUNS, t),
                Some(_) => tracing::warn!(
                    runs = self.runs.len(),
                    "sink: too many runs of sequence numbers for the object's metadata; only the first and last are written"
                ),
                None => {}
            }
        }
    }

    /// The manifest in `attributes`: `Ok(None)` when there is none, an
    /// error naming the key that is malformed.
    pub fn from_attributes(attributes: &Attributes) -> Result<Option<Manifest>, String> {
        let get = |k: &str| {
            attributes
                .get(&Attribute::Metadata(k.to_owned().into()))
                .map(|v| v.as_ref().to_owned())
        };
        let num = |k: &str| -> Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("`{k}` is not a number: {v:?}"))
                })
                .transpose()
        };
        let Some(records) = num(META_RECORDS)? else {
            return Ok(None);
        };
        let sha256 = get(META_SHA256).ok_or(format!("`{META_SHA256}` is missing"))?;
        let instance = get(META_INSTANCE).unwrap_or_default();
        let (runs, runs_omitted) = match (num(META_FIRST_SEQ)?, num(META_LAST_SEQ)?) {
            (Some(first), Some(last)) if first <= last => match get(META_SEQ_RUNS) {
                Some(t) => (parse_runs(first, last, &t)?, false),
                None => {
                    let span = last - first + 1;
                    (vec![(first, last)], span != records)
                }
            },
            (None, None) => (Vec::new(), false),
            (f, l) => return Err(format!("bad sequence range: first {f:?}, last {l:?}")),
        };
        Ok(Some(Manifest {
            records,
            sha256,
            instance,
            runs,
            runs_omitted,
        }))
    }

    /// Reads the manifest of the object at `key` (a HEAD-like get, no
    /// content): `Ok(Err(_))` when it is malformed, `Ok(Ok(None))` when
    /// the object has none.
    pub async fn read(
        store: &dyn ObjectStore,
        key: &Path,
    ) -> object_store::Result<Result<Option<Manifest>, String>> {
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let got = store.get_opts(key, opts).await?;
        Ok(Manifest::from_attributes(&got.attributes))
    }
}

/// Parses `s3e-seq-runs` against the first and last number.
fn parse_runs(first: u64, last: u64, text: &str) -> Result<Vec<(u64, u64)>, String> {
    let bad = || format!("`{META_SEQ_RUNS}` is malformed: {text:?}");
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for part in text.split(',') {
        let (off, count) = part.split_once('+').ok_or_else(bad)?;
        let off: u64 = off.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let a = first.checked_add(off).ok_or_else(bad)?;
        let b = (a + count).checked_sub(1).ok_or_else(bad)?;
        if count == 0 || runs.last().is_some_and(|r| r.1 >= a) || b > last {
            return Err(bad());
        }
        runs.push((a, b));
    }
    if runs.first().map(|r| r.0) != Some(first) || runs.last().map(|r| r.1) != Some(last) {
        return Err(bad());
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_through_attributes() {
        let m = Manifest::new(b"abc", 5, &[10, 11, 12, 20, 22], "inst");
        assert_eq!(m.runs, [(10, 12), (20, 20), (22, 22)]);
        let mut a = Attributes::new();
        m.add_to(&mut a);
        assert_eq!(
            a.get(&Attribute::Metadata(META_SEQ_RUNS.into()))
                .map(|v| v.as_ref()),
            Some("0+3,10+1,12+1")
        );
        assert_eq!(Manifest::from_attributes(&a).unwrap(), Some(m));
        // One run: no runs key.
        let one = Manifest::new(b"", 3, &[4, 5, 6], "i");
        let mut a = Attributes::new();
        one.add_to(&mut a);
        assert!(a.get(&Attribute::Metadata(META_SEQ_RUNS.into())).is_none());
        assert_eq!(Manifest::from_attributes(&a).unwrap(), Some(one));
        assert_eq!(Manifest::from_attributes(&Attributes::new()), Ok(None));
    }

    #[test]
    fn malformed_manifests_name_the_key() {
        let mut a = Attributes::new();
        let mut set = |k: &'static str, v: &'static str| {
            a.insert(Attribute::Metadata(k.into()), v.into());
        };
        set(META_RECORDS, "3");
        set(META_SHA256, "00");
        set(META_FIRST_SEQ, "1");
        set(META_LAST_SEQ, "9");
        set(META_SEQ_RUNS, "0+2,1+2");
        let e = Manifest::from_attributes(&a).unwrap_err();
        assert!(e.contains(META_SEQ_RUNS), "{e}");
        a.insert(Attribute::Metadata(META_RECORDS.into()), "x".into());
        let e = Manifest::from_attributes(&a).unwrap_err();
        assert!(e.contains(META_RECORDS), "{e}");
    }

    #[test]
    fn too_many_runs_keep_the_span() {
        let seqs: Vec<u64> = (0..2000).map(|n| n * 2).collect();
        let m = Manifest::new(b"", 2000, &seqs, "i");
        let mut a = Attributes::new();
        m.add_to(&mut a);
        let back = Manifest::from_attributes(&a).unwrap().unwrap();
        assert!(back.runs_omitted);
        assert_eq!(back.runs, [(0, 3998)]);
    }
}

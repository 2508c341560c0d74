//! Checking that a time range of the sink's objects is complete, against
//! their [delivery manifests](crate::manifest): [`verify()`].
//!
//! It lists the objects of the range (the keys are
//! `{prefix}{partition}{name}`, with time partitions `YYYY/MM/DD/HH/` or,
//! in the Hive layout, `year=YYYY/month=MM/day=DD/hour=HH/`; daily
//! partitions lack the hour), and for each one:
//!
//! - reads it and checks its bytes against the manifest's SHA-256 and its
//!   record count against the records it decodes to;
//! - adds the runs of delivery numbers its manifest lists to its
//!   instance's sorted set of runs, reporting a run that overlaps another
//!   object's (a batch stored twice under two keys, a wiped spool that
//!   numbered again from 0).
//!
//! Then every hole between the runs is reported as missing numbers, with
//! the objects before and after it and, for sequence-named keys, the name
//! the object that starts the hole would have (a spooled batch's key holds
//! its first delivery number).
//!
//! Delivery numbers are per sink instance and shared by its partitions, so
//! the objects of the partitions just before and after the range are read
//! too (their manifests only, not their content): events that arrived at a
//! partition boundary fill holes at the range's edges. A hole is reported
//! only between numbers the range's objects and those neighbours hold.
//!
//! It streams: objects are listed and checked a few at a time, and what is
//! kept is the runs (a few per object), not the content.
//!
//! The spool gives each batch the next consecutive numbers when it closes
//! it (see [`crate::spool`]), so refused pushes, interleaved partitions and
//! kill -9 leave no hole. What it cannot tell apart from loss: with
//! event-time partitions, late events that went to a partition outside the
//! range (verify the whole prefix instead); and the one double fault the
//! spool's docs name (a failed fsync, then a crash before the frame was
//! written again).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use s3_event_core::Layout;

use crate::manifest::{sha256_hex, Manifest};
use crate::{Error, Result};

/// How many objects are read at once.
const CONCURRENCY: usize = 4;

/// What [`verify()`] checks.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The sink's prefix (`events/`); empty for the bucket's root.
    pub prefix: String,
    /// The first partition time checked (inclusive); `None`: from the start.
    pub from: Option<DateTime<Utc>>,
    /// The partition time checking stops at (exclusive); `None`: to the end.
    pub to: Option<DateTime<Utc>>,
    /// The partition layout (plain `YYYY/MM/DD/HH/` or Hive).
    pub layout: Layout,
}

/// Something that makes a range incomplete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Sequence numbers no object holds.
    Missing {
        /// The instance that numbered them.
        instance: String,
        /// The first missing number.
        first: u64,
        /// The last missing number.
        last: u64,
        /// The object holding the number before the hole.
        after: String,
        /// The object holding the number after it.
        before: String,
        /// The key the object starting at `first` would have (sequence-named keys).
        expected: Option<String>,
    },
    /// Sequence numbers held by two objects.
    Overlap {
        /// The instance that numbered them.
        instance: String,
        /// The first number held twice.
        first: u64,
        /// The last number held twice.
        last: u64,
        /// One object.
        key: String,
        /// The other.
        other: String,
    },
    /// An object whose content does not match its manifest.
    Mismatch {
        /// The object.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// An object that cannot be read or decoded, or whose manifest is malformed.
    Unreadable {
        /// The object.
        key: String,
        /// Why.
        reason: String,
    },
    /// An object without a manifest.
    NoManifest {
        /// The object.
        key: String,
    },
}

impl Problem {
    /// The objects the problem names.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Problem::Missing {
                after,
                before,
                expected,
                ..
            } => [Some(after), Some(before), expected.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            Problem::Overlap { key, other, .. } => vec![key, other],
            Problem::Mismatch { key, .. }
            | Problem::Unreadable { key, .. }
            | Problem::NoManifest { key } => vec![key],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing {
                instance,
                first,
                last,
                after,
                before,
                expected,
            } => {
                let n = last - first + 1;
                write!(f, "missing: {n} sequence numbers {first}..={last} of instance `{instance}`, between {after} and {before}")?;
                match expected {
                    Some(k) => write!(f, " (no object {k})"),
                    None => Ok(()),
                }
            }
            Problem::Overlap {
                instance,
                first,
                last,
                key,
                other,
            } => write!(f, "overlap: sequence numbers {first}..={last} of instance `{instance}` are in both {key} and {other}"),
            Problem::Mismatch { key, reason } => write!(f, "mismatch: {key}: {reason}"),
            Problem::Unreadable { key, reason } => write!(f, "unreadable: {key}: {reason}"),
            Problem::NoManifest { key } => write!(f, "no manifest: {key}"),
        }
    }
}

/// What [`verify()`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Objects checked (in the range).
    pub objects: u64,
    /// Records in them, per their manifests.
    pub records: u64,
    /// Per instance, the lowest and highest sequence number in the range.
    pub instances: BTreeMap<String, (u64, u64)>,
    /// Objects of neighbouring partitions whose manifests were read.
    pub neighbours: u64,
    /// What makes the range incomplete, in the order found.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the range is complete: no problem found.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Parses a partition time: `YYYY-MM-DD`, `YYYY-MM-DDTHH` or RFC 3339.
pub fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (date, hour) = match s.split_once(['T', ' ']) {
        Some((d, h)) => (d, h.trim_end_matches('Z')),
        None => (s, "0"),
    };
    let bad = || format!("`{s}` is not a time: expected YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339");
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
    let hour: u32 = hour.parse().map_err(|_| bad())?;
    let t = day.and_hms_opt(hour, 0, 0).ok_or_else(bad)?;
    Ok(Utc.from_utc_datetime(&t))
}

/// The partition of `key` (after `prefix`): its start and length.
fn partition_time(prefix: &str, key: &str) -> Option<(DateTime<Utc>, Duration)> {
    let rest = key.strip_prefix(prefix)?.trim_start_matches('/');
    let mut dirs: Vec<&str> = rest.split('/').collect();
    dirs.pop();
    let num = |i: usize| -> Option<u32> {
        let d = dirs.get(i)?;
        let v = d.split_once('=').map_or(*d, |(_, v)| v);
        v.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse().ok())?
    };
    let day = NaiveDate::from_ymd_opt(num(0)? as i32, num(1)?, num(2)?)?;
    let (hour, len) = match num(3) {
        Some(h) => (h, Duration::hours(1)),
        None => (0, Duration::days(1)),
    };
    Some((Utc.from_utc_datetime(&day.and_hms_opt(hour, 0, 0)?), len))
}

/// Where an object stands relative to the range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    In,
    Neighbour,
    Out,
}

fn place(opts: &VerifyOptions, key: &str) -> Place {
    if opts.from.is_none() && opts.to.is_none() {
        return Place::In;
    }
    let Some((t, len)) = partition_time(&opts.prefix, key) else {
        return Place::Out;
    };
    let after_from = opts.from.is_none_or(|f| t >= f);
    let before_to = opts.to.is_none_or(|to| t < to);
    if after_from && before_to {
        Place::In
    } else if opts.from.is_some_and(|f| t < f && t + len >= f)
        || opts.to.is_some_and(|to| t >= to && t < to + len)
    {
        Place::Neighbour
    } else {
        Place::Out
    }
}

/// The prefixes to list: one per day from the day before `from` to the day
/// after `to` (neighbours included), or the whole prefix.
fn listing_prefixes(opts: &VerifyOptions) -> Vec<Path> {
    let base = opts.prefix.trim_end_matches('/');
    let (Some(from), Some(to)) = (opts.from, opts.to) else {
        return vec![Path::from(base)];
    };
    let mut day = (from - Duration::hours(1)).date_naive();
    let last = (to + Duration::hours(1)).date_naive();
    let mut out = Vec::new();
    while day <= last {
        let part = match opts.layout {
            Layout::Hive => day.format("year=%Y/month=%m/day=%d").to_string(),
            _ => day.format("%Y/%m/%d").to_string(),
        };
        out.push(Path::from(format!("{base}/{part}")));
        day = day.succ_opt().expect("a day after a listed one");
    }
    out
}

/// One object, read and checked.
struct Checked {
    key: String,
    place: Place,
    manifest: Option<Manifest>,
    problems: Vec<Problem>,
}

/// Reads the object at `key`: all of it when in the range (content checked
/// against the manifest), else only its manifest.
async fn check(store: &dyn ObjectStore, key: String, place: Place) -> Checked {
    let mut out = Checked {
        key,
        place,
        manifest: None,
        problems: Vec::new(),
    };
    let path = Path::from(out.key.as_str());
    let unreadable = |reason: String| Problem::Unreadable {
        key: out.key.clone(),
        reason,
    };
    if place == Place::Neighbour {
        match Manifest::read(store, &path).await {
            Ok(Ok(m)) => out.manifest = m,
            Ok(Err(e)) => out.problems.push(unreadable(format!("manifest: {e}"))),
            Err(e) => out.problems.push(unreadable(e.to_string())),
        }
        return out;
    }
    let got = match store.get(&path).await {
        Ok(g) => g,
        Err(e) => {
            out.problems.push(unreadable(e.to_string()));
            return out;
        }
    };
    let manifest = match Manifest::from_attributes(&got.attributes) {
        Ok(Some(m)) => m,
        Ok(None) => {
            out.problems.push(Problem::NoManifest {
                key: out.key.clone(),
            });
            return out;
        }
        Err(e) => {
            out.problems.push(unreadable(format!("manifest: {e}")));
            return out;
        }
    };
    match got.bytes().await {
        Ok(bytes) => out
            .problems
            .extend(content_problems(&out.key, &bytes, &manifest)),
        Err(e) => out.problems.push(unreadable(e.to_string())),
    }
    out.manifest = Some(manifest);
    out
}

/// How `bytes` differ from what `manifest` says of them.
fn content_problems(key: &str, bytes: &[u8], manifest: &Manifest) -> Vec<Problem> {
    let mut out = Vec::new();
    let mismatch = |reason: String| Problem::Mismatch {
        key: key.to_owned(),
        reason,
    };
    let sha = sha256_hex(bytes);
    if sha != manifest.sha256 {
        out.push(mismatch(format!(
            "SHA-256 {sha} of its {} bytes, the manifest says {}",
            bytes.len(),
            manifest.sha256
        )));
    }
    match crate::decode(key, bytes) {
        Ok(d) => {
            if !d.bad.is_empty() {
                let b = &d.bad[0];
                out.push(mismatch(format!(
                    "{} records do not parse; the first at byte {}: {}",
                    d.bad.len(),
                    b.offset,
                    b.reason
                )));
            }
            let n = (d.records.len() + d.bad.len()) as u64;
            if n != manifest.records {
                out.push(mismatch(format!(
                    "{n} records, the manifest says {}",
                    manifest.records
                )));
            }
        }
        Err(e) => out.push(Problem::Unreadable {
            key: key.to_owned(),
            reason: e.to_string(),
        }),
    }
    out
}

/// One run of sequence numbers: its last number, object, and whether the
/// object is in the range.
struct Run {
    last: u64,
    key: Arc<str>,
    inside: bool,
}

/// Per instance, the runs of every object seen, by first number.
#[derive(Default)]
struct Runs(BTreeMap<String, BTreeMap<u64, Vec<Run>>>);

impl Runs {
    /// Adds `key`'s runs, reporting overlaps with runs already there (when
    /// either object is in the range).
    fn add(&mut self, key: &str, inside: bool, m: &Manifest, problems: &mut Vec<Problem>) {
        let key: Arc<str> = key.into();
        let runs = self.0.entry(m.instance.clone()).or_default();
        for &(first, last) in &m.runs {
            for (&start, here) in runs.range(..=last) {
                for r in here
                    .iter()
                    .filter(|r| r.last >= first && (inside || r.inside))
                {
                    problems.push(Problem::Overlap {
                        instance: m.instance.clone(),
                        first: first.max(start),
                        last: last.min(r.last),
                        key: key.to_string(),
                        other: r.key.to_string(),
                    });
                }
            }
            runs.entry(first).or_default().push(Run {
                last,
                key: Arc::clone(&key),
                inside,
            });
        }
    }

    /// The holes between the runs that lie within the range's numbers,
    /// extended to the nearest neighbour's number on each side, and each
    /// instance's lowest and highest number in the range.
    fn holes(&self, problems: &mut Vec<Problem>, spans: &mut BTreeMap<String, (u64, u64)>) {
        for (instance, runs) in &self.0 {
            let all = || {
                runs.iter()
                    .flat_map(|(s, rs)| rs.iter().map(move |r| (*s, r)))
            };
            let inside = || all().filter(|(_, r)| r.inside);
            let (Some(lo), Some(hi)) = (
                inside().map(|(s, _)| s).min(),
                inside().map(|(_, r)| r.last).max(),
            ) else {
                continue;
            };
            spans.insert(instance.clone(), (lo, hi));
            let lo_ext = all().map(|(_, r)| r.last).filter(|&l| l < lo).max();
            let lo_ext = lo_ext.unwrap_or(lo);
            let hi_ext = runs.range(hi + 1..).next().map_or(hi, |(&s, _)| s);
            // The highest number covered so far, and its object.
            let mut covered: Option<(u64, Arc<str>)> = None;
            for (&start, here) in runs {
                if let Some((end, after)) = &covered {
                    if start > end + 1 && *end >= lo_ext && start <= hi_ext {
                        problems.push(Problem::Missing {
                            instance: instance.clone(),
                            first: end + 1,
                            last: start - 1,
                            after: after.to_string(),
                            before: here[0].key.to_string(),
                            expected: sibling_key(after, instance, end + 1),
                        });
                    }
                }
                for r in here {
                    if covered.as_ref().is_none_or(|(e, _)| r.last > *e) {
                        covered = Some((r.last, Arc::clone(&r.key)));
                    }
                }
            }
        }
    }
}

/// `key` with its sequence number replaced by `seq`, for keys named
/// `{instance}-{seq:020}[-r{n}]{ext}`.
fn sibling_key(key: &str, instance: &str, seq: u64) -> Option<String> {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    let rest = name.strip_prefix(instance)?.strip_prefix('-')?;
    let digits = rest.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ext = rest[20..].find('.').map_or("", |i| &rest[20 + i..]);
    let sep = if dir.is_empty() { "" } else { "/" };
    Some(format!("{dir}{sep}{instance}-{seq:020}{ext}"))
}

/// Checks the objects of `opts`' range in `store`; see the [module
/// docs](self). Fails only when the store cannot be listed.
pub async fn verify(store: &dyn ObjectStore, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut runs = Runs::default();
    for prefix in listing_prefixes(opts) {
        let listed = store
            .list(Some(&prefix))
            .map_err(|source| Error::Store { source })
            .try_filter_map(|m: ObjectMeta| {
                let key = m.location.to_string();
                let p = place(opts, &key);
                std::future::ready(Ok((p != Place::Out).then_some((key, p))))
            })
            .map_ok(|(key, p)| async move { Ok(check(store, key, p).await) })
            .try_buffer_unordered(CONCURRENCY);
        futures_util::pin_mut!(listed);
        while let Some(c) = listed.try_next().await? {
            let inside = c.place == Place::In;
            if inside {
                report.objects += 1;
            } else {
                report.neighbours += 1;
            }
            if let Some(m) = &c.manifest {
                report.records += if inside { m.records } else { 0 };
                runs.add(&c.key, inside, m, &mut report.problems);
            }
            if inside {
                report.problems.extend(c.problems);
            }
        }
    }
    runs.holes(&mut report.problems, &mut report.instances);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_times_from_keys() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(
            partition_time("ev/", "ev/2024/03/05/10/i-00000000000000000007.ndjson.gz"),
            Some((t("2024-03-05T10"), Duration::hours(1)))
        );
        assert_eq!(
            partition_time("ev", "ev/year=2024/month=03/day=05/x.parquet"),
            Some((t("2024-03-05"), Duration::days(1)))
        );
        assert_eq!(partition_time("ev/", "ev/misc/x.json"), None);
        assert_eq!(
            t("2024-03-05T10:30:00Z"),
            t("2024-03-05T10") + Duration::minutes(30)
        );
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }

    #[test]
    fn sibling_keys_follow_the_naming() {
        assert_eq!(
            sibling_key("p/2024/i-00000000000000000007-r1.ndjson.gz", "i", 12).as_deref(),
            Some("p/2024/i-00000000000000000012.ndjson.gz")
        );
        assert_eq!(sibling_key("p/0b9c-uuid.ndjson", "i", 1), None);
    }
}

//! Event names (`s3:ObjectCreated:Put`, ...) and event masks.
//!
//! [`EventName`] knows every name AWS S3 and MinIO/AIStor send. It parses
//! with or without the `s3:` prefix and prints with it; AWS records carry the
//! name without the prefix ([`EventName::as_aws_str`]). An [`EventMask`] is a
//! set of names held in one `u64`, built from the patterns of a notification
//! configuration (`s3:ObjectCreated:*`, `*`), so that matching an event
//! against a rule is one AND.
//!
//! ```
//! use s3_event_core::{EventMask, EventName};
//!
//! let put: EventName = "ObjectCreated:Put".parse().unwrap();
//! assert_eq!(put, EventName::ObjectCreatedPut);
//! assert_eq!(put.to_string(), "s3:ObjectCreated:Put");
//! assert_eq!(put.as_aws_str(), "ObjectCreated:Put");
//!
//! let created = EventMask::from_pattern("s3:ObjectCreated:*").unwrap();
//! assert!(created.contains(put));
//! assert!(!created.contains(EventName::ObjectRemovedDelete));
//! assert_eq!(created.to_string(), "s3:ObjectCreated:*");
//! ```

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign};
use std::str::FromStr;

use crate::{Error, EventRecord, Result};

macro_rules! event_names {
    (
        $(#[$meta:meta])*
        pub enum EventName {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        pub enum EventName {
            $( $(#[$vmeta])* $variant, )*
        }

        impl EventName {
            /// Every event name, in a fixed order (families together).
            pub const ALL: &'static [EventName] = &[$(EventName::$variant,)*];

            /// Canonical names with the `s3:` prefix, indexed by discriminant.
            const CANONICAL: &'static [&'static str] = &[$(concat!("s3:", $wire),)*];

            fn from_aws_str(s: &str) -> Option<EventName> {
                match s {
                    $( $wire => Some(EventName::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

event_names! {
    /// An S3 event name: every name AWS S3 sends and every name MinIO/AIStor
    /// adds.
    ///
    /// Parses with or without the `s3:` prefix (`ObjectCreated:Put`,
    /// `s3:ObjectCreated:Put`); prints with it. Patterns such as
    /// `s3:ObjectCreated:*` are not names: see [`EventMask::from_pattern`].
    /// Serialized as its canonical string.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    #[non_exhaustive]
    pub enum EventName {
        /// `s3:ObjectCreated:Put` (AWS, MinIO).
        ObjectCreatedPut => "ObjectCreated:Put",
        /// `s3:ObjectCreated:Post` (AWS, MinIO).
        ObjectCreatedPost => "ObjectCreated:Post",
        /// `s3:ObjectCreated:Copy` (AWS, MinIO).
        ObjectCreatedCopy => "ObjectCreated:Copy",
        /// `s3:ObjectCreated:CompleteMultipartUpload` (AWS, MinIO).
        ObjectCreatedCompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
        /// `s3:ObjectCreated:PutRetention` (MinIO).
        ObjectCreatedPutRetention => "ObjectCreated:PutRetention",
        /// `s3:ObjectCreated:PutLegalHold` (MinIO).
        ObjectCreatedPutLegalHold => "ObjectCreated:PutLegalHold",
        /// `s3:ObjectCreated:PutTagging` (MinIO).
        ObjectCreatedPutTagging => "ObjectCreated:PutTagging",
        /// `s3:ObjectCreated:DeleteTagging` (MinIO).
        ObjectCreatedDeleteTagging => "ObjectCreated:DeleteTagging",
        /// `s3:ObjectRemoved:Delete` (AWS, MinIO).
        ObjectRemovedDelete => "ObjectRemoved:Delete",
        /// `s3:ObjectRemoved:DeleteMarkerCreated` (AWS, MinIO).
        ObjectRemovedDeleteMarkerCreated => "ObjectRemoved:DeleteMarkerCreated",
        /// `s3:ObjectRemoved:DeleteAllVersions` (MinIO).
        ObjectRemovedDeleteAllVersions => "ObjectRemoved:DeleteAllVersions",
        /// `s3:ObjectRemoved:NoOP` (MinIO: a delete of a missing object).
        ObjectRemovedNoOp => "ObjectRemoved:NoOP",
        /// `s3:ObjectAccessed:Get` (MinIO).
        ObjectAccessedGet => "ObjectAccessed:Get",
        /// `s3:ObjectAccessed:Head` (MinIO).
        ObjectAccessedHead => "ObjectAccessed:Head",
        /// `s3:ObjectAccessed:GetRetention` (MinIO).
        ObjectAccessedGetRetention => "ObjectAccessed:GetRetention",
        /// `s3:ObjectAccessed:GetLegalHold` (MinIO).
        ObjectAccessedGetLegalHold => "ObjectAccessed:GetLegalHold",
        /// `s3:ObjectAccessed:Attributes` (MinIO).
        ObjectAccessedAttributes => "ObjectAccessed:Attributes",
        /// `s3:ObjectRestore:Post` (AWS, MinIO).
        ObjectRestorePost => "ObjectRestore:Post",
        /// `s3:ObjectRestore:Completed` (AWS, MinIO).
        ObjectRestoreCompleted => "ObjectRestore:Completed",
        /// `s3:ObjectRestore:Delete` (AWS: the restored copy expired).
        ObjectRestoreDelete => "ObjectRestore:Delete",
        /// `s3:Replication:OperationFailedReplication` (AWS, MinIO).
        ReplicationOperationFailedReplication => "Replication:OperationFailedReplication",
        /// `s3:Replication:OperationMissedThreshold` (AWS, MinIO).
        ReplicationOperationMissedThreshold => "Replication:OperationMissedThreshold",
        /// `s3:Replication:OperationReplicatedAfterThreshold` (AWS, MinIO).
        ReplicationOperationReplicatedAfterThreshold => "Replication:OperationReplicatedAfterThreshold",
        /// `s3:Replication:OperationNotTracked` (AWS, MinIO).
        ReplicationOperationNotTracked => "Replication:OperationNotTracked",
        /// `s3:Replication:OperationCompletedReplication` (MinIO).
        ReplicationOperationCompletedReplication => "Replication:OperationCompletedReplication",
        /// `s3:LifecycleExpiration:Delete` (AWS).
        LifecycleExpirationDelete => "LifecycleExpiration:Delete",
        /// `s3:LifecycleExpiration:DeleteMarkerCreated` (AWS).
        LifecycleExpirationDeleteMarkerCreated => "LifecycleExpiration:DeleteMarkerCreated",
        /// `s3:LifecycleDelMarkerExpiration:Delete` (MinIO: ILM expired a
        /// delete marker).
        LifecycleDelMarkerExpirationDelete => "LifecycleDelMarkerExpiration:Delete",
        /// `s3:LifecycleTransition` (AWS).
        LifecycleTransition => "LifecycleTransition",
        /// `s3:ObjectTransition:Failed` (MinIO).
        ObjectTransitionFailed => "ObjectTransition:Failed",
        /// `s3:ObjectTransition:Complete` (MinIO).
        ObjectTransitionComplete => "ObjectTransition:Complete",
        /// `s3:IntelligentTiering` (AWS).
        IntelligentTiering => "IntelligentTiering",
        /// `s3:ObjectTagging:Put` (AWS).
        ObjectTaggingPut => "ObjectTagging:Put",
        /// `s3:ObjectTagging:Delete` (AWS).
        ObjectTaggingDelete => "ObjectTagging:Delete",
        /// `s3:ObjectAcl:Put` (AWS).
        ObjectAclPut => "ObjectAcl:Put",
        /// `s3:ReducedRedundancyLostObject` (AWS).
        ReducedRedundancyLostObject => "ReducedRedundancyLostObject",
        /// `s3:Scanner:ManyVersions` (MinIO: an object has too many versions).
        ScannerManyVersions => "Scanner:ManyVersions",
        /// `s3:Scanner:LargeVersions` (MinIO: an object's versions are too
        /// large).
        ScannerLargeVersions => "Scanner:LargeVersions",
        /// `s3:Scanner:BigPrefix` (MinIO: a prefix has too many sub-folders).
        ScannerBigPrefix => "Scanner:BigPrefix",
        /// `s3:BucketCreated:*` (MinIO; the `*` is part of the name).
        BucketCreated => "BucketCreated:*",
        /// `s3:BucketRemoved:*` (MinIO; the `*` is part of the name).
        BucketRemoved => "BucketRemoved:*",
        /// `s3:TestEvent` (AWS sends it once to a destination when a
        /// configuration is set; it is not an object event).
        TestEvent => "TestEvent",
    }
}

/// Families whose `s3:<Family>:*` pattern AWS or MinIO accept; masks are
/// printed with these patterns where a whole family is present.
const PRINTED_FAMILIES: &[&str] = &[
    "ObjectCreated",
    "ObjectRemoved",
    "ObjectAccessed",
    "ObjectRestore",
    "Replication",
    "LifecycleExpiration",
    "ObjectTransition",
    "ObjectTagging",
];

impl EventName {
    /// The canonical name with the `s3:` prefix (`s3:ObjectCreated:Put`), as
    /// MinIO sends it and as notification configurations write it.
    pub const fn as_str(self) -> &'static str {
        Self::CANONICAL[self as usize]
    }

    /// The name without the `s3:` prefix (`ObjectCreated:Put`), as AWS
    /// records carry it.
    pub fn as_aws_str(self) -> &'static str {
        &self.as_str()[3..]
    }

    /// The mask holding only this name.
    pub const fn mask(self) -> EventMask {
        EventMask(1 << self as u32)
    }

    /// The family: the part before the last `:` without the prefix
    /// (`ObjectCreated`), or the whole name when it has no operation
    /// (`LifecycleTransition`).
    fn family(self) -> &'static str {
        let s = self.as_aws_str();
        s.rsplit_once(':').map_or(s, |(family, _)| family)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventName {
    type Err = Error;

    /// Parses a name with or without the `s3:` prefix; anything else is
    /// [`Error::UnknownEventName`]. AIStor's spellings of the bucket events,
    /// `s3:BucketCreated` and `s3:BucketRemoved` (MinIO writes them with
    /// `:*`), name the same events.
    fn from_str(s: &str) -> Result<Self> {
        let bare = s.strip_prefix("s3:").unwrap_or(s);
        EventName::from_aws_str(bare)
            .or(match bare {
                "BucketCreated" => Some(EventName::BucketCreated),
                "BucketRemoved" => Some(EventName::BucketRemoved),
                _ => None,
            })
            .ok_or_else(|| Error::UnknownEventName { name: s.to_owned() })
    }
}

impl serde::Serialize for EventName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EventName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an S3 event name such as `s3:ObjectCreated:Put`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<EventName, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl EventRecord {
    /// The record's `eventName` as an [`EventName`] (records carry it with
    /// the `s3:` prefix from MinIO, without it from AWS). A missing name is
    /// [`Error::UnknownEventName`] with an empty name.
    pub fn parsed_event_name(&self) -> Result<EventName> {
        self.event_name.as_deref().unwrap_or_default().parse()
    }
}

/// A set of [`EventName`]s, one bit per name.
///
/// Built from names ([`EventName::mask`], `|`, [`FromIterator`]) or from the
/// patterns of a notification configuration ([`EventMask::from_pattern`]).
/// Printed as a comma-separated list that uses `s3:<Family>:*` where a whole
/// family is present; serialized as a list of those patterns and deserialized
/// from one pattern or a list of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventMask(u64);

impl EventMask {
    /// No names.
    pub const EMPTY: EventMask = EventMask(0);

    /// What the pattern `*` (or `s3:*`) expands to: every name except
    /// `s3:TestEvent`, which is not an object event.
    pub const ALL: EventMask =
        EventMask(((1u64 << EventName::ALL.len()) - 1) & !EventName::TestEvent.mask().0);

    /// Expands one pattern of a notification configuration, with or without
    /// the `s3:` prefix: an event name (`s3:ObjectCreated:Put`), a family
    /// (`s3:ObjectCreated:*`: every name of the family, AWS's and MinIO's),
    /// or `*` / `s3:*` ([`EventMask::ALL`]). Anything else is
    /// [`Error::UnknownEventName`].
    pub fn from_pattern(pattern: &str) -> Result<EventMask> {
        let s = pattern.strip_prefix("s3:").unwrap_or(pattern);
        if s == "*" {
            return Ok(EventMask::ALL);
        }
        if let Ok(name) = s.parse::<EventName>() {
            return Ok(name.mask());
        }
        if let Some(family) = s.strip_suffix(":*") {
            let mask: EventMask = EventName::ALL
                .iter()
                .copied()
                .filter(|n| n.as_aws_str().contains(':') && n.family() == family)
                .collect();
            if !mask.is_empty() {
                return Ok(mask);
            }
        }
        Err(Error::UnknownEventName {
            name: pattern.to_owned(),
        })
    }

    /// The union of the expansions of several patterns (see
    /// [`EventMask::from_pattern`]).
    pub fn from_patterns<I>(patterns: I) -> Result<EventMask>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        patterns.into_iter().try_fold(EventMask::EMPTY, |acc, p| {
            Ok(acc | EventMask::from_pattern(p.as_ref())?)
        })
    }

    /// Whether `name` is in the set.
    #[inline]
    pub const fn contains(self, name: EventName) -> bool {
        self.0 & name.mask().0 != 0
    }

    /// Adds `name` to the set.
    pub fn insert(&mut self, name: EventName) {
        self.0 |= name.mask().0;
    }

    /// Names in either set.
    pub const fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    /// Names in both sets.
    pub const fn intersection(self, other: EventMask) -> EventMask {
        EventMask(self.0 & other.0)
    }

    /// Whether the sets share a name.
    pub const fn intersects(self, other: EventMask) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of names in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The names in the set, in [`EventName::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = EventName> + Clone {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(EventName::ALL[i])
        })
    }

    /// The shortest list of patterns that expands to this set: whole families
    /// as `s3:<Family>:*`, other names one by one.
    pub fn patterns(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut done = EventMask::EMPTY;
        for name in self.iter() {
            if done.contains(name) {
                continue;
            }
            let family = name.family();
            if PRINTED_FAMILIES.contains(&family) {
                let whole = EventMask::from_pattern(&format!("{family}:*")).unwrap_or_default();
                if self.intersection(whole) == whole {
                    out.push(format!("s3:{family}:*"));
                    done |= whole;
                    continue;
                }
            }
            out.push(name.as_str().to_owned());
            done.insert(name);
        }
        out
    }
}

impl From<EventName> for EventMask {
    fn from(name: EventName) -> Self {
        name.mask()
    }
}

impl FromIterator<EventName> for EventMask {
    fn from_iter<I: IntoIterator<Item = EventName>>(iter: I) -> Self {
        iter.into_iter().fold(EventMask::EMPTY, |m, n| m | n.mask())
    }
}

impl BitOr for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventMask) -> EventMask {
        self.union(rhs)
    }
}

impl BitOr for EventName {
    type Output = EventMask;
    fn bitor(self, rhs: EventName) -> EventMask {
        self.mask().union(rhs.mask())
    }
}

impl BitOr<EventName> for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventName) -> EventMask {
        self.union(rhs.mask())
    }
}

impl BitOrAssign for EventMask {
    fn bitor_assign(&mut self, rhs: EventMask) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for EventMask {
    type Output = EventMask;
    fn bitand(self, rhs: EventMask) -> EventMask {
        self.intersection(rhs)
    }
}

impl BitAndAssign for EventMask {
    fn bitand_assign(&mut self, rhs: EventMask) {
        self.0 &= rhs.0;
    }
}

impl fmt::Display for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventMask[{self}]")
    }
}

impl serde::Serialize for EventMask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.patterns())
    }
}

impl<'de> serde::Deserialize<'de> for EventMask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventMask;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event name pattern or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<EventMask, E> {
                EventMask::from_pattern(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<EventMask, A::Error> {
                let mut mask = EventMask::EMPTY;
                while let Some(p) = seq.next_element::<String>()? {
                    mask |= EventMask::from_pattern(&p).map_err(serde::de::Error::custom)?;
                }
                Ok(mask)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name with the string it must parse from, as AWS and MinIO write
    /// them.
    const LISTED: &[&str] = &[
        // AWS
        "s3:TestEvent",
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectRestore:Post",
        "s3:ObjectRestore:Completed",
        "s3:ObjectRestore:Delete",
        "s3:ReducedRedundancyLostObject",
        "s3:Replication:OperationFailedReplication",
        "s3:Replication:OperationMissedThreshold",
        "s3:Replication:OperationReplicatedAfterThreshold",
        "s3:Replication:OperationNotTracked",
        "s3:LifecycleExpiration:Delete",
        "s3:LifecycleExpiration:DeleteMarkerCreated",
        "s3:LifecycleTransition",
        "s3:IntelligentTiering",
        "s3:ObjectTagging:Put",
        "s3:ObjectTagging:Delete",
        "s3:ObjectAcl:Put",
        // MinIO / AIStor (internal/event/name.go)
        "s3:ObjectAccessed:Get",
        "s3:ObjectAccessed:Head",
        "s3:ObjectAccessed:GetRetention",
        "s3:ObjectAccessed:GetLegalHold",
        "s3:ObjectAccessed:Attributes",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectRemoved:NoOP",
        "s3:ObjectRemoved:DeleteAllVersions",
        "s3:Replication:OperationCompletedReplication",
        "s3:ObjectTransition:Failed",
        "s3:ObjectTransition:Complete",
        "s3:Scanner:ManyVersions",
        "s3:Scanner:LargeVersions",
        "s3:Scanner:BigPrefix",
        "s3:LifecycleDelMarkerExpiration:Delete",
        "s3:BucketCreated:*",
        "s3:BucketRemoved:*",
    ];

    #[test]
    fn every_listed_name_parses_with_and_without_prefix() {
        assert_eq!(LISTED.len(), EventName::ALL.len());
        for s in LISTED {
            let with: EventName = s.parse().unwrap();
            let without: EventName = s[3..].parse().unwrap();
            assert_eq!(with, without, "{s}");
            assert_eq!(with.to_string(), *s);
            assert_eq!(with.as_aws_str(), &s[3..]);
        }
    }

    #[test]
    fn display_is_canonical_and_discriminants_index_the_table() {
        for (i, n) in EventName::ALL.iter().enumerate() {
            assert_eq!(*n as usize, i);
            assert!(n.as_str().starts_with("s3:"));
            assert_eq!(n.as_str().parse::<EventName>().unwrap(), *n);
        }
        assert!(EventName::ALL.len() <= 64);
    }

    #[test]
    fn unknown_names_are_errors() {
        for bad in [
            "",
            "s3:",
            "ObjectCreated",
            "s3:ObjectCreated:*",
            "s3:objectcreated:put",
            "s3:ObjectCreated:Put ",
        ] {
            match bad.parse::<EventName>() {
                Err(Error::UnknownEventName { name }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let e = "s3:Nope".parse::<EventName>().unwrap_err();
        assert_eq!(e.to_string(), "unknown event name `s3:Nope`");
    }

    #[test]
    fn patterns_expand_to_their_family() {
        let created = EventMask::from_pattern("s3:ObjectCreated:*").unwrap();
        assert_eq!(created, EventMask::from_pattern("ObjectCreated:*").unwrap());
        assert_eq!(created.len(), 8);
        assert!(created
            .iter()
            .all(|n| n.as_str().starts_with("s3:ObjectCreated:")));
        // AIStor's spelling of the bucket events.
        assert_eq!(
            "s3:BucketCreated".parse::<EventName>().unwrap(),
            EventName::BucketCreated
        );
        assert_eq!(
            "s3:BucketRemoved".parse::<EventName>().unwrap(),
            EventName::BucketRemoved
        );
        assert_eq!(
            EventMask::from_pattern("s3:BucketRemoved").unwrap(),
            EventName::BucketRemoved.mask()
        );
        let expect = [
            ("s3:ObjectRemoved:*", 4),
            ("s3:ObjectAccessed:*", 5),
            ("s3:ObjectRestore:*", 3),
            ("s3:Replication:*", 5),
            ("s3:LifecycleExpiration:*", 2),
            ("s3:ObjectTagging:*", 2),
            ("s3:ObjectTransition:*", 2),
            ("s3:Scanner:*", 3),
            ("s3:ObjectAcl:*", 1),
            ("s3:BucketCreated:*", 1),
            ("s3:ObjectCreated:Put", 1),
            ("LifecycleTransition", 1),
        ];
        for (p, n) in expect {
            assert_eq!(EventMask::from_pattern(p).unwrap().len(), n, "{p}");
        }
        let all = EventMask::from_pattern("*").unwrap();
        assert_eq!(all, EventMask::from_pattern("s3:*").unwrap());
        assert_eq!(all, EventMask::ALL);
        assert_eq!(all.len(), EventName::ALL.len() - 1);
        assert!(!all.contains(EventName::TestEvent));
        for bad in [
            "s3:Nope:*",
            "s3:LifecycleTransition:*",
            "**",
            "s3:ObjectCreated:P*",
        ] {
            assert!(
                matches!(
                    EventMask::from_pattern(bad),
                    Err(Error::UnknownEventName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mask_set_operations() {
        let a = EventName::ObjectCreatedPut | EventName::ObjectCreatedPost;
        let b = EventMask::from(EventName::ObjectCreatedPost) | EventName::ObjectRemovedDelete;
        assert_eq!(
            (a & b).iter().collect::<Vec<_>>(),
            [EventName::ObjectCreatedPost]
        );
        assert_eq!((a | b).len(), 3);
        assert!(a.intersects(b));
        assert!(!a.intersects(EventName::ObjectRemovedDelete.mask()));
        assert!(EventMask::EMPTY.is_empty());
        let mut m = EventMask::EMPTY;
        m.insert(EventName::TestEvent);
        assert_eq!(m.iter().collect::<Vec<_>>(), [EventName::TestEvent]);
    }

    #[test]
    fn masks_print_compactly_and_round_trip() {
        let m = EventMask::from_patterns([
            "s3:ObjectCreated:*",
            "s3:ObjectRemoved:Delete",
            "s3:LifecycleTransition",
        ])
        .unwrap();
        assert_eq!(
            m.to_string(),
            "s3:ObjectCreated:*, s3:ObjectRemoved:Delete, s3:LifecycleTransition"
        );
        assert_eq!(EventMask::from_patterns(m.patterns()).unwrap(), m);
        assert_eq!(
            EventMask::from_patterns(EventMask::ALL.patterns()).unwrap(),
            EventMask::ALL
        );
        // AWS's four ObjectCreated names are not the whole (MinIO-extended) family.
        let aws_created = EventName::ObjectCreatedPut
            | EventName::ObjectCreatedPost
            | EventName::ObjectCreatedCopy
            | EventName::ObjectCreatedCompleteMultipartUpload;
        assert_eq!(aws_created.patterns().len(), 4);
    }

    #[test]
    fn serde_as_strings() {
        let n: EventName = serde_json::from_str(r#""ObjectRemoved:Delete""#).unwrap();
        assert_eq!(n, EventName::ObjectRemovedDelete);
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#""s3:ObjectRemoved:Delete""#
        );
        assert!(serde_json::from_str::<EventName>(r#""s3:Bogus""#).is_err());

        let m: EventMask =
            serde_json::from_str(r#"["s3:ObjectCreated:*","s3:ObjectRemoved:Delete"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"["s3:ObjectCreated:*","s3:ObjectRemoved:Delete"]"#
        );
        let one: EventMask = serde_json::from_str(r#""*""#).unwrap();
        assert_eq!(one, EventMask::ALL);
        let e = serde_json::from_str::<EventMask>(r#"["s3:Bogus:*"]"#).unwrap_err();
        assert!(e.to_string().contains("s3:Bogus:*"), "{e}");
    }

    #[test]
    fn record_event_names() {
        let aws = EventRecord::from_slice(br#"{"eventName":"ObjectCreated:Put"}"#).unwrap();
        let minio = EventRecord::from_slice(br#"{"eventName":"s3:ObjectCreated:Put"}"#).unwrap();
        assert_eq!(
            aws.parsed_event_name().unwrap(),
            EventName::ObjectCreatedPut
        );
        assert_eq!(
            minio.parsed_event_name().unwrap(),
            EventName::ObjectCreatedPut
        );
        let none = EventRecord::from_slice(b"{}").unwrap();
        assert!(matches!(
            none.parsed_event_name(),
            Err(Error::UnknownEventName { .. })
        ));
    }
}

//! Property tests of rules and the overlap validator.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use s3_event_core::{
    Arn, Error, EventMask, EventName, NotificationConfiguration, NotificationRule, RuleSet,
};

/// Patterns rules are drawn from: whole families, single names, everything.
const PATTERNS: &[&str] = &[
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Copy",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectAccessed:*",
    "s3:LifecycleTransition",
    "*",
];

/// Events looked up: members of the families above, and names no pattern
/// but `*` covers.
const EVENTS: &[EventName] = &[
    EventName::ObjectCreatedPut,
    EventName::ObjectCreatedCopy,
    EventName::ObjectCreatedPost,
    EventName::ObjectRemovedDelete,
    EventName::ObjectRemovedDeleteMarkerCreated,
    EventName::ObjectAccessedGet,
    EventName::LifecycleTransition,
    EventName::ReducedRedundancyLostObject,
    EventName::TestEvent,
];

const TARGETS: &[&str] = &[
    "arn:aws:sqs:us-east-1:123456789012:q",
    "arn:aws:sns:us-east-1:123456789012:t",
    "arn:aws:lambda:us-east-1:123456789012:function:f",
    "arn:minio:sqs::1:webhook",
    "arn:minio:sqs::primary:kafka",
];

/// A rule as the test sees it: the patterns, filters and target it was made
/// from, so that the reference matcher uses none of the library's logic.
#[derive(Clone, Debug)]
struct Spec {
    patterns: Vec<&'static str>,
    prefix: Option<String>,
    suffix: Option<String>,
    target: &'static str,
}

impl Spec {
    fn rule(&self, id: String) -> NotificationRule {
        let mut r = NotificationRule::new(
            id,
            EventMask::from_patterns(&self.patterns).unwrap(),
            self.target.parse::<Arn>().unwrap(),
        );
        if let Some(p) = &self.prefix {
            r = r.with_prefix(p.clone());
        }
        if let Some(s) = &self.suffix {
            r = r.with_suffix(s.clone());
        }
        r
    }

    /// The reference for events: the name among the expanded patterns,
    /// compared as strings.
    fn has_event(&self, event: EventName) -> bool {
        let name = event.to_string();
        let family = name.rsplit_once(':').map(|(f, _)| format!("{f}:*"));
        self.patterns.iter().any(|p| {
            *p == name
                || (*p == "*" && event != EventName::TestEvent)
                || Some(p.to_string()) == family
        })
    }

    /// The reference for keys: prefix and suffix checked directly.
    fn matches_key(&self, key: &str) -> bool {
        key.starts_with(self.prefix.as_deref().unwrap_or(""))
            && key.ends_with(self.suffix.as_deref().unwrap_or(""))
    }

    fn matches(&self, event: EventName, key: &str) -> bool {
        self.has_event(event) && self.matches_key(key)
    }
}

fn spec(alphabet: &'static str, max_len: usize) -> impl Strategy<Value = Spec> {
    let regex = format!("[{alphabet}]{{0,{max_len}}}");
    let text = || proptest::string::string_regex(&regex).unwrap();
    (
        subsequence(PATTERNS.to_vec(), 1..=3),
        proptest::option::of(text()),
        proptest::option::of(text()),
        select(TARGETS.to_vec()),
    )
        .prop_map(|(patterns, prefix, suffix, target)| Spec {
            patterns,
            prefix,
            suffix,
            target,
        })
}

fn rules_of(specs: &[Spec]) -> Vec<NotificationRule> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| s.rule(format!("r{i}")))
        .collect()
}

/// Every string over `alphabet` of length at most `max_len`.
fn all_keys(alphabet: &[char], max_len: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut layer = vec![String::new()];
    for _ in 0..max_len {
        layer = layer
            .iter()
            .flat_map(|k| alphabet.iter().map(move |c| format!("{k}{c}")))
            .collect();
        out.extend(layer.iter().cloned());
    }
    out
}

proptest! {
    /// (a) RuleSet agrees with a plain loop over the rules.
    #[test]
    fn rule_set_agrees_with_a_naive_matcher(
        specs in proptest::collection::vec(spec("ab/.", 3), 0..16),
        keys in proptest::collection::vec("[ab/.]{0,7}", 1..24),
        mids in proptest::collection::vec("[ab/.]{0,2}", 16),
    ) {
        let rules = rules_of(&specs);
        let set = RuleSet::new(rules.clone()).unwrap();
        // Free keys, plus one built to hit each rule.
        let mut keys = keys;
        for (s, mid) in specs.iter().zip(&mids) {
            keys.push(format!("{}{mid}{}", s.prefix.as_deref().unwrap_or(""), s.suffix.as_deref().unwrap_or("")));
        }
        let mut indices = Vec::new();
        for key in &keys {
            for &event in EVENTS {
                let want_rules: BTreeSet<String> =
                    specs.iter().enumerate().filter(|(_, s)| s.matches(event, key)).map(|(i, _)| format!("r{i}")).collect();
                let want_targets: BTreeSet<&str> =
                    specs.iter().filter(|s| s.matches(event, key)).map(|s| s.target).collect();

                let got: Vec<String> = set.matches(event, key).map(|a| a.to_string()).collect();
                let got_set: BTreeSet<&str> = got.iter().map(String::as_str).collect();
                prop_assert_eq!(got.len(), got_set.len(), "duplicate targets for {} {:?}: {:?}", event, key, got);
                prop_assert_eq!(&got_set, &want_targets, "{} {:?}", event, key);

                set.match_into(event, key, &mut indices);
                let via_indices: BTreeSet<String> = indices.iter().map(|&i| set.targets()[i].to_string()).collect();
                prop_assert_eq!(indices.len(), via_indices.len());
                prop_assert_eq!(via_indices.iter().map(String::as_str).collect::<BTreeSet<_>>(), want_targets);

                let got_rules: Vec<String> = set.matching_rules(event, key).map(|r| r.id.clone()).collect();
                prop_assert_eq!(got_rules.len(), want_rules.len(), "rule repeated for {} {:?}", event, key);
                prop_assert_eq!(got_rules.into_iter().collect::<BTreeSet<_>>(), want_rules);
            }
        }
    }

    /// (b) The overlap validator agrees with brute force: two rules are
    /// ambiguous iff they share an event and some key is matched by both.
    /// Keys up to max(prefix) + max(suffix) letters suffice: when prefixes
    /// and suffixes are nested, the longer prefix followed by the longer
    /// suffix is such a key.
    #[test]
    fn overlap_validator_agrees_with_brute_force(a in spec("ab", 3), b in spec("ab", 3)) {
        let len = |s: &Option<String>| s.as_deref().map_or(0, str::len);
        let bound = len(&a.prefix).max(len(&b.prefix)) + len(&a.suffix).max(len(&b.suffix));
        let keys = all_keys(&['a', 'b'], bound);
        let shares_an_event = EventName::ALL.iter().any(|&e| a.has_event(e) && b.has_event(e));
        let ambiguous = shares_an_event && keys.iter().any(|k| a.matches_key(k) && b.matches_key(k));

        let (ra, rb) = (a.rule("a".into()), b.rule("b".into()));
        let both = ra.events.intersection(rb.events);
        match NotificationConfiguration::new(vec![ra, rb]).validate() {
            Ok(()) => prop_assert!(!ambiguous, "validator missed an overlap: {:?} {:?}", a, b),
            Err(Error::AmbiguousRules { first, second, events }) => {
                prop_assert!(ambiguous, "validator reported a false overlap: {:?} {:?}", a, b);
                prop_assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
                prop_assert_eq!(events, both.to_string());
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// (c) A configuration that validates routes every (event, key) to at
    /// most one rule.
    #[test]
    fn valid_configurations_match_at_most_one_rule(
        specs in proptest::collection::vec(spec("ab/", 3), 0..8),
        keys in proptest::collection::vec("[ab/]{0,7}", 1..16),
    ) {
        let config = NotificationConfiguration::new(rules_of(&specs));
        if config.validate().is_ok() {
            let set = RuleSet::from_config(&config).unwrap();
            for key in &keys {
                for &event in EVENTS {
                    prop_assert!(set.matching_rules(event, key).count() <= 1);
                }
            }
        }
    }

    /// (d) Valid configurations survive XML and JSON round trips, with
    /// characters that need escaping in their filters.
    #[test]
    fn configurations_round_trip(specs in proptest::collection::vec(spec("a&<>'\" /", 4), 0..6)) {
        let config = NotificationConfiguration::new(rules_of(&specs));
        if config.validate().is_ok() {
            prop_assert_eq!(&NotificationConfiguration::from_xml(&config.to_xml()).unwrap(), &config);
            // JSON groups rules by kind (queues, topics, functions).
            let mut by_id = NotificationConfiguration::from_json(&config.to_json()).unwrap();
            by_id.rules.sort_by(|a, b| a.id.cmp(&b.id));
            prop_assert_eq!(&by_id, &config);
        }
    }
}

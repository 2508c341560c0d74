//! Notification rules: AWS's `NotificationConfiguration` (XML and JSON), its
//! validation, and [`RuleSet`], which answers "which destinations get this
//! (event name, key)".
//!
//! ```
//! use s3_event_core::{EventName, NotificationConfiguration, RuleSet};
//!
//! let xml = r#"<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
//!   <QueueConfiguration>
//!     <Id>images</Id>
//!     <Filter><S3Key>
//!       <FilterRule><Name>prefix</Name><Value>images/</Value></FilterRule>
//!       <FilterRule><Name>suffix</Name><Value>.jpg</Value></FilterRule>
//!     </S3Key></Filter>
//!     <Queue>arn:aws:sqs:us-east-1:123456789012:images</Queue>
//!     <Event>s3:ObjectCreated:*</Event>
//!   </QueueConfiguration>
//!   <QueueConfiguration>
//!     <Queue>arn:minio:sqs::1:webhook</Queue>
//!     <Event>s3:ObjectRemoved:*</Event>
//!   </QueueConfiguration>
//! </NotificationConfiguration>"#;
//! let config = NotificationConfiguration::from_xml(xml).unwrap();
//! assert_eq!(config.rules[1].id, "rule-2"); // rules without an Id are named by position
//!
//! let rules = RuleSet::from_config(&config).unwrap();
//! let hits: Vec<String> = rules
//!     .matches(EventName::ObjectCreatedPut, "images/cat.jpg")
//!     .map(|arn| arn.to_string())
//!     .collect();
//! assert_eq!(hits, ["arn:aws:sqs:us-east-1:123456789012:images"]);
//! assert_eq!(rules.matches(EventName::ObjectCreatedPut, "docs/cat.jpg").count(), 0);
//! assert_eq!(rules.matches(EventName::ObjectRemovedDelete, "docs/cat.jpg").count(), 1);
//! ```
//!
//! # Matching
//!
//! A rule matches an event when its event mask contains the event name, the
//! decoded object key starts with the rule's prefix and ends with its suffix
//! (both checked on the whole key, independently; an absent filter matches
//! every key).
//!
//! # Validation
//!
//! [`NotificationConfiguration::validate`] (run by the parsers) applies AWS's
//! rules: at most one prefix and one suffix per rule, values of at most 1024
//! bytes, at least one event, unique ids, and no two rules that overlap —
//! share an event name, have prefixes of which one starts the other and
//! suffixes of which one ends the other — whatever their destinations
//! (AWS's "Configuration is ambiguously defined"; MinIO and RustFS do not
//! check this). [`RuleSet::new`] checks rules one by one but allows overlaps,
//! as MinIO does; a key matched by several rules for one destination is
//! delivered to it once.

use std::collections::HashMap;
use std::fmt::Write as _;

use quick_xml::events::Event as XmlEvent;
use serde::{Deserialize, Serialize};

// The destination types live in `arn.rs`; they are exported from here so that
// `lib.rs` re-exports them with the rest of this module.
use crate::arn::{Arn, AwsService};
use crate::{Error, EventMask, EventName, EventRecord, Result};

/// The longest prefix or suffix value AWS accepts, in bytes.
const MAX_FILTER_VALUE: usize = 1024;

/// The XML namespace of S3 documents.
const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One key filter rule of a notification rule (AWS's `FilterRule`, whose
/// `Name` is `prefix` or `suffix`, in any case).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FilterRule {
    /// The key must start with this value.
    Prefix(String),
    /// The key must end with this value.
    Suffix(String),
}

impl FilterRule {
    /// The rule's `Name`: `prefix` or `suffix`.
    pub fn name(&self) -> &'static str {
        match self {
            FilterRule::Prefix(_) => "prefix",
            FilterRule::Suffix(_) => "suffix",
        }
    }

    /// The rule's `Value`.
    pub fn value(&self) -> &str {
        match self {
            FilterRule::Prefix(v) | FilterRule::Suffix(v) => v,
        }
    }
}

/// One notification rule: a `QueueConfiguration`, `TopicConfiguration` or
/// `CloudFunctionConfiguration` of AWS, or a MinIO queue configuration whose
/// destination is a target id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRule {
    /// The rule's `Id`. The parsers name a rule without one `rule-<n>`, `n`
    /// being its 1-based position in [`NotificationConfiguration::rules`].
    pub id: String,
    /// The event names the rule matches.
    pub events: EventMask,
    /// Key filters: at most one prefix and one suffix.
    pub filter: Vec<FilterRule>,
    /// Where matching events go: an SQS queue (or MinIO target), SNS topic or
    /// Lambda function.
    pub target: Arn,
}

impl NotificationRule {
    /// A rule matching `events` on every key.
    pub fn new(id: impl Into<String>, events: EventMask, target: impl Into<Arn>) -> Self {
        NotificationRule {
            id: id.into(),
            events,
            filter: Vec::new(),
            target: target.into(),
        }
    }

    /// Sets the prefix filter (replacing any other).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.filter.retain(|f| !matches!(f, FilterRule::Prefix(_)));
        self.filter.push(FilterRule::Prefix(prefix.into()));
        self
    }

    /// Sets the suffix filter (replacing any other).
    pub fn with_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.filter.retain(|f| !matches!(f, FilterRule::Suffix(_)));
        self.filter.push(FilterRule::Suffix(suffix.into()));
        self
    }

    /// The prefix filter's value (the first one), or `""` when there is none.
    pub fn prefix(&self) -> &str {
        self.filter
            .iter()
            .find_map(|f| match f {
                FilterRule::Prefix(v) => Some(v.as_str()),
                FilterRule::Suffix(_) => None,
            })
            .unwrap_or("")
    }

    /// The suffix filter's value (the first one), or `""` when there is none.
    pub fn suffix(&self) -> &str {
        self.filter
            .iter()
            .find_map(|f| match f {
                FilterRule::Suffix(v) => Some(v.as_str()),
                FilterRule::Prefix(_) => None,
            })
            .unwrap_or("")
    }

    /// Whether this rule matches `event` on the decoded object `key`.
    pub fn matches(&self, event: EventName, key: &str) -> bool {
        self.events.contains(event)
            && key.starts_with(self.prefix())
            && key.ends_with(self.suffix())
    }

    /// Checks the rule on its own: at least one event, at most one prefix and
    /// one suffix, values of at most 1024 bytes. Errors are
    /// [`Error::InvalidRule`] naming the rule.
    pub fn validate(&self) -> Result<()> {
        if self.events.is_empty() {
            return Err(invalid(&self.id, "it has no events"));
        }
        for name in ["prefix", "suffix"] {
            let mut values = self.filter.iter().filter(|f| f.name() == name);
            let first = values.next();
            if values.next().is_some() {
                return Err(invalid(
                    &self.id,
                    format!("it has more than one {name} filter rule (at most one is allowed)"),
                ));
            }
            if let Some(f) = first {
                if f.value().len() > MAX_FILTER_VALUE {
                    return Err(invalid(
                        &self.id,
                        format!(
                            "its {name} filter value is {} bytes long (at most {MAX_FILTER_VALUE} are allowed)",
                            f.value().len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether this rule and `other` overlap: they share an event name, one
    /// prefix starts the other and one suffix ends the other, so that some
    /// key is matched by both for that event.
    fn overlaps(&self, other: &NotificationRule) -> bool {
        let (p1, p2, s1, s2) = (self.prefix(), other.prefix(), self.suffix(), other.suffix());
        self.events.intersects(other.events)
            && (p1.starts_with(p2) || p2.starts_with(p1))
            && (s1.ends_with(s2) || s2.ends_with(s1))
    }
}

fn invalid(rule: &str, message: impl Into<String>) -> Error {
    Error::InvalidRule {
        rule: rule.to_owned(),
        message: message.into(),
    }
}

/// A bucket's notification configuration: AWS's `NotificationConfiguration`
/// in XML (`PutBucketNotificationConfiguration`) or JSON (the CLI and SDK
/// shape with `QueueConfigurations`, `TopicConfigurations`,
/// `LambdaFunctionConfigurations`).
///
/// Serde (de)serializes the JSON shape; deserializing validates.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NotificationConfiguration {
    /// The rules, in document order (for JSON: queues, then topics, then
    /// functions).
    pub rules: Vec<NotificationRule>,
    /// Whether the configuration turns on EventBridge delivery
    /// (`EventBridgeConfiguration`).
    pub event_bridge: bool,
}

/// The kind of configuration element a rule came from or is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Queue,
    Topic,
    Function,
}

impl Kind {
    fn of(target: &Arn) -> Kind {
        match target {
            Arn::Target(_) => Kind::Queue,
            Arn::Aws(a) => match a.service() {
                AwsService::Sqs => Kind::Queue,
                AwsService::Sns => Kind::Topic,
                AwsService::Lambda => Kind::Function,
            },
        }
    }

    /// The XML configuration element and its destination element.
    fn xml(self) -> (&'static str, &'static str) {
        match self {
            Kind::Queue => ("QueueConfiguration", "Queue"),
            Kind::Topic => ("TopicConfiguration", "Topic"),
            Kind::Function => ("CloudFunctionConfiguration", "CloudFunction"),
        }
    }

    /// What the destination must be, for error messages.
    fn expects(self) -> &'static str {
        match self {
            Kind::Queue => "an SQS queue ARN or a MinIO target id (arn:minio:sqs:...)",
            Kind::Topic => "an SNS topic ARN",
            Kind::Function => "a Lambda function ARN",
        }
    }
}

/// Builds and checks one rule from its parsed parts (shared by XML and JSON).
fn build_rule(
    id: String,
    kind: Kind,
    arn_field: &str,
    target: Option<&str>,
    events: &[&str],
    filter: &[(&str, &str)],
) -> Result<NotificationRule> {
    let target = target.ok_or_else(|| invalid(&id, format!("`{arn_field}` is missing")))?;
    let target: Arn = target
        .parse()
        .map_err(|e| invalid(&id, format!("`{arn_field}`: {e}")))?;
    if Kind::of(&target) != kind {
        return Err(invalid(
            &id,
            format!("`{arn_field}` must be {}, not `{target}`", kind.expects()),
        ));
    }
    let mut mask = EventMask::EMPTY;
    for e in events {
        mask |= EventMask::from_pattern(e)
            .map_err(|_| invalid(&id, format!("unknown event name `{e}`")))?;
    }
    let mut rules = Vec::with_capacity(filter.len());
    for (name, value) in filter {
        let value = (*value).to_owned();
        rules.push(if name.eq_ignore_ascii_case("prefix") {
            FilterRule::Prefix(value)
        } else if name.eq_ignore_ascii_case("suffix") {
            FilterRule::Suffix(value)
        } else {
            return Err(invalid(
                &id,
                format!("unknown filter rule name `{name}` (expected `prefix` or `suffix`)"),
            ));
        });
    }
    Ok(NotificationRule {
        id,
        events: mask,
        filter: rules,
        target,
    })
}

fn auto_id(id: Option<&str>, position: usize) -> String {
    match id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("rule-{position}"),
    }
}

impl NotificationConfiguration {
    /// A configuration of `rules` (not validated; see
    /// [`NotificationConfiguration::validate`]).
    pub fn new(rules: Vec<NotificationRule>) -> Self {
        NotificationConfiguration {
            rules,
            event_bridge: false,
        }
    }

    /// Parses and validates AWS's XML `NotificationConfiguration` (the body
    /// of `PutBucketNotificationConfiguration`; MinIO's is the same). The
    /// namespace may be present or not. Malformed XML and unknown elements
    /// are [`Error::Xml`]; a bad rule is [`Error::InvalidRule`] naming it.
    pub fn from_xml(xml: &str) -> Result<Self> {
        let root = xml_tree(xml)?;
        if root.name != "NotificationConfiguration" {
            return Err(xml_error(format!(
                "the root element is `{}`, expected `NotificationConfiguration`",
                root.name
            )));
        }
        let mut config = NotificationConfiguration::default();
        for elem in &root.children {
            let kind = match elem.name.as_str() {
                "QueueConfiguration" => Kind::Queue,
                "TopicConfiguration" => Kind::Topic,
                "CloudFunctionConfiguration" => Kind::Function,
                "EventBridgeConfiguration" => {
                    config.event_bridge = true;
                    continue;
                }
                other => {
                    return Err(xml_error(format!(
                        "unknown element `{other}` in NotificationConfiguration"
                    )))
                }
            };
            let rule = rule_from_xml(elem, kind, config.rules.len() + 1)?;
            config.rules.push(rule);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates AWS's JSON form: `{"QueueConfigurations": [{"Id",
    /// "QueueArn", "Events", "Filter": {"Key": {"FilterRules": [{"Name",
    /// "Value"}]}}}], "TopicConfigurations": [... "TopicArn" ...],
    /// "LambdaFunctionConfigurations": [... "LambdaFunctionArn" ...],
    /// "EventBridgeConfiguration": {}}`. Unknown fields are an error.
    pub fn from_json(json: &str) -> Result<Self> {
        let wire: json::Config = serde_json::from_str(json).map_err(|source| {
            Error::json::<json::Config>("NotificationConfiguration", json.as_bytes(), source)
        })?;
        NotificationConfiguration::from_wire(wire)
    }

    /// The configuration as AWS's XML, with the S3 namespace. Event masks are
    /// written as the shortest list of patterns (see [`EventMask::patterns`]).
    pub fn to_xml(&self) -> String {
        use quick_xml::escape::escape;
        let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = write!(out, r#"<NotificationConfiguration xmlns="{S3_XMLNS}">"#);
        for rule in &self.rules {
            let (elem, dest) = Kind::of(&rule.target).xml();
            let _ = write!(out, "<{elem}><Id>{}</Id>", escape(rule.id.as_str()));
            if !rule.filter.is_empty() {
                out.push_str("<Filter><S3Key>");
                for f in &rule.filter {
                    let _ = write!(
                        out,
                        "<FilterRule><Name>{}</Name><Value>{}</Value></FilterRule>",
                        f.name(),
                        escape(f.value())
                    );
                }
                out.push_str("</S3Key></Filter>");
            }
            let _ = write!(out, "<{dest}>{}</{dest}>", escape(rule.target.to_string()));
            for p in rule.events.patterns() {
                let _ = write!(out, "<Event>{p}</Event>");
            }
            let _ = write!(out, "</{elem}>");
        }
        if self.event_bridge {
            out.push_str("<EventBridgeConfiguration></EventBridgeConfiguration>");
        }
        out.push_str("</NotificationConfiguration>");
        out
    }

    /// The configuration as AWS's JSON form (see
    /// [`NotificationConfiguration::from_json`]).
    pub fn to_json(&self) -> String {
        // Serializing plain strings and lists cannot fail.
        serde_json::to_string(&self.to_wire()).expect("configuration serializes")
    }

    /// Checks every rule ([`NotificationRule::validate`]), that ids are
    /// unique, and that no two rules overlap ([`Error::AmbiguousRules`]
    /// naming both and the event names they share).
    pub fn validate(&self) -> Result<()> {
        let mut ids: HashMap<&str, usize> = HashMap::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()?;
            if let Some(first) = ids.insert(rule.id.as_str(), i) {
                return Err(invalid(
                    &rule.id,
                    format!(
                        "the id is used by rules {} and {} (ids must be unique)",
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
        for (i, a) in self.rules.iter().enumerate() {
            for b in &self.rules[i + 1..] {
                if a.overlaps(b) {
                    return Err(Error::AmbiguousRules {
                        first: a.id.clone(),
                        second: b.id.clone(),
                        events: a.events.intersection(b.events).to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl NotificationConfiguration {
    /// Converts and validates the JSON shape.
    fn from_wire(wire: json::Config) -> Result<Self> {
        let mut config = NotificationConfiguration {
            rules: Vec::new(),
            event_bridge: wire.event_bridge_configuration.is_some(),
        };
        let groups = [
            (Kind::Queue, wire.queue_configurations),
            (Kind::Topic, wire.topic_configurations),
            (Kind::Function, wire.lambda_function_configurations),
        ];
        for (kind, rules) in &groups {
            for r in rules {
                let id = auto_id(r.id.as_deref(), config.rules.len() + 1);
                let fields = [
                    (Kind::Queue, "QueueArn", &r.queue_arn),
                    (Kind::Topic, "TopicArn", &r.topic_arn),
                    (Kind::Function, "LambdaFunctionArn", &r.lambda_function_arn),
                ];
                let mut arn_field = "";
                let mut target = None;
                for (k, field, value) in fields {
                    if k == *kind {
                        arn_field = field;
                        target = value.as_deref();
                    } else if value.is_some() {
                        return Err(invalid(
                            &id,
                            format!("`{field}` does not belong in this configuration"),
                        ));
                    }
                }
                let events: Vec<&str> = r.events.iter().map(String::as_str).collect();
                let filter: Vec<(&str, &str)> = r
                    .filter
                    .iter()
                    .flat_map(|f| f.key.iter())
                    .flat_map(|k| k.filter_rules.iter())
                    .map(|f| (f.name.as_str(), f.value.as_str()))
                    .collect();
                config
                    .rules
                    .push(build_rule(id, *kind, arn_field, target, &events, &filter)?);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The JSON shape.
    fn to_wire(&self) -> json::Config {
        let mut wire = json::Config {
            event_bridge_configuration: self.event_bridge.then(Default::default),
            ..Default::default()
        };
        for rule in &self.rules {
            let kind = Kind::of(&rule.target);
            let arn = Some(rule.target.to_string());
            let filter = (!rule.filter.is_empty()).then(|| json::Filter {
                key: Some(json::Key {
                    filter_rules: rule
                        .filter
                        .iter()
                        .map(|f| json::FilterRule {
                            name: f.name().to_owned(),
                            value: f.value().to_owned(),
                        })
                        .collect(),
                }),
            });
            let mut r = json::Rule {
                id: Some(rule.id.clone()),
                events: rule.events.patterns(),
                filter,
                ..Default::default()
            };
            match kind {
                Kind::Queue => {
                    r.queue_arn = arn;
                    wire.queue_configurations.push(r);
                }
                Kind::Topic => {
                    r.topic_arn = arn;
                    wire.topic_configurations.push(r);
                }
                Kind::Function => {
                    r.lambda_function_arn = arn;
                    wire.lambda_function_configurations.push(r);
                }
            }
        }
        wire
    }
}

impl Serialize for NotificationConfiguration {
    /// AWS's JSON shape (see [`NotificationConfiguration::to_json`]).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NotificationConfiguration {
    /// AWS's JSON shape, validated (see
    /// [`NotificationConfiguration::from_json`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = json::Config::deserialize(d)?;
        NotificationConfiguration::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

/// AWS's JSON shape of a notification configuration.
mod json {
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub(super) struct Config {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(super) topic_configurations: Vec<Rule>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(super) queue_configurations: Vec<Rule>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(super) lambda_function_configurations: Vec<Rule>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) event_bridge_configuration: Option<serde_json::Map<String, serde_json::Value>>,
    }

    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub(super) struct Rule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) topic_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) queue_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) lambda_function_arn: Option<String>,
        #[serde(default)]
        pub(super) events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) filter: Option<Filter>,
    }

    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub(super) struct Filter {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) key: Option<Key>,
    }

    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub(super) struct Key {
        #[serde(default)]
        pub(super) filter_rules: Vec<FilterRule>,
    }

    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub(super) struct FilterRule {
        pub(super) name: String,
        pub(super) value: String,
    }
}

// --- XML reading -----------------------------------------------------------

/// A parsed XML element: local name, text content, child elements.
struct Elem {
    name: String,
    text: String,
    children: Vec<Elem>,
}

fn xml_error(message: impl Into<String>) -> Error {
    Error::Xml {
        what: "NotificationConfiguration",
        message: message.into(),
    }
}

/// Reads a small XML document into a tree of elements (namespaces dropped,
/// entities and CDATA resolved into text).
fn xml_tree(xml: &str) -> Result<Elem> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root = None;
    let err = |reader: &quick_xml::Reader<&[u8]>, e: &dyn std::fmt::Display| {
        xml_error(format!("{e} (at byte {})", reader.error_position()))
    };
    loop {
        let event = reader.read_event().map_err(|e| err(&reader, &e))?;
        let text: Option<std::borrow::Cow<'_, str>> = match &event {
            XmlEvent::Start(e) | XmlEvent::Empty(e) => {
                if root.is_some() {
                    return Err(xml_error("content after the root element"));
                }
                let name = std::str::from_utf8(e.local_name().into_inner())
                    .map_err(|e| err(&reader, &e))?
                    .to_owned();
                stack.push(Elem {
                    name,
                    text: String::new(),
                    children: Vec::new(),
                });
                if matches!(event, XmlEvent::Start(_)) {
                    continue;
                }
                None
            }
            XmlEvent::End(_) => None,
            XmlEvent::Text(t) => Some(t.xml_content().map_err(|e| err(&reader, &e))?),
            XmlEvent::CData(t) => Some(t.decode().map_err(|e| err(&reader, &e))?),
            XmlEvent::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| err(&reader, &e))? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| err(&reader, &e))?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(xml_error(format!("unknown entity `&{other};`"))),
                    },
                };
                Some(c.to_string().into())
            }
            XmlEvent::Eof => {
                return match (root, stack.is_empty()) {
                    (Some(root), true) => Ok(root),
                    _ => Err(xml_error("unexpected end of document")),
                }
            }
            XmlEvent::Decl(_) | XmlEvent::Comment(_) | XmlEvent::PI(_) | XmlEvent::DocType(_) => {
                continue
            }
        };
        match text {
            Some(text) => match stack.last_mut() {
                Some(top) => top.text.push_str(&text),
                None if text.trim().is_empty() => {}
                None => return Err(xml_error("text outside the root element")),
            },
            // An element ended (End, or Empty right after its push).
            None => {
                let done = stack.pop().ok_or_else(|| xml_error("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
        }
    }
}

/// One `QueueConfiguration` / `TopicConfiguration` /
/// `CloudFunctionConfiguration` element.
fn rule_from_xml(elem: &Elem, kind: Kind, position: usize) -> Result<NotificationRule> {
    let (_, dest) = kind.xml();
    let id_elems: Vec<&Elem> = elem.children.iter().filter(|c| c.name == "Id").collect();
    let id = auto_id(id_elems.first().map(|e| e.text.as_str()), position);
    if id_elems.len() > 1 {
        return Err(invalid(&id, "it has more than one `Id`"));
    }
    let mut target = None;
    let mut events = Vec::new();
    let mut filter = Vec::new();
    let mut seen_filter = false;
    for child in &elem.children {
        match child.name.as_str() {
            "Id" => {}
            "Event" => events.push(child.text.trim()),
            "Filter" => {
                if std::mem::replace(&mut seen_filter, true) {
                    return Err(invalid(&id, "it has more than one `Filter`"));
                }
                for key in &child.children {
                    if key.name != "S3Key" {
                        return Err(invalid(
                            &id,
                            format!("unknown element `{}` in `Filter`", key.name),
                        ));
                    }
                    for rule in &key.children {
                        if rule.name != "FilterRule" {
                            return Err(invalid(
                                &id,
                                format!("unknown element `{}` in `S3Key`", rule.name),
                            ));
                        }
                        let (mut name, mut value) = (None, None);
                        for part in &rule.children {
                            let slot = match part.name.as_str() {
                                "Name" => &mut name,
                                "Value" => &mut value,
                                other => {
                                    return Err(invalid(
                                        &id,
                                        format!("unknown element `{other}` in `FilterRule`"),
                                    ))
                                }
                            };
                            if slot.replace(part.text.as_str()).is_some() {
                                return Err(invalid(
                                    &id,
                                    format!("a `FilterRule` has more than one `{}`", part.name),
                                ));
                            }
                        }
                        let name =
                            name.ok_or_else(|| invalid(&id, "a `FilterRule` has no `Name`"))?;
                        filter.push((name.trim(), value.unwrap_or("")));
                    }
                }
            }
            n if n == dest => {
                if target.replace(child.text.trim()).is_some() {
                    return Err(invalid(&id, format!("it has more than one `{dest}`")));
                }
            }
            other => {
                return Err(invalid(
                    &id,
                    format!("unknown element `{other}` in `{}`", elem.name),
                ));
            }
        }
    }
    build_rule(id, kind, dest, target, &events, &filter)
}

// --- Matching --------------------------------------------------------------

/// No node: the end of a parent chain.
const NONE: u32 = u32::MAX;

/// Routes (event name, key) pairs to the destinations of matching rules.
///
/// Built once from rules; a lookup costs one array index by event name, a
/// binary search over the distinct prefixes of the rules for that event, and
/// a `starts_with`/`ends_with` per candidate — no string compare of event
/// names and no allocation.
///
/// # How it works
///
/// For each event name the rules that contain it are grouped by prefix and
/// the distinct prefixes sorted. The prefixes of a key that are rule
/// prefixes form a chain (each starts the next). The longest of them is the
/// greatest sorted prefix `<=` the key or one of its ancestors (its longest
/// proper prefix in the set, precomputed), so the search is a
/// `partition_point` followed by a walk up the ancestor chain.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<NotificationRule>,
    targets: Vec<Arn>,
    by_event: Vec<EventIndex>,
}

/// The rules of one event name, grouped by prefix.
#[derive(Clone, Debug, Default)]
struct EventIndex {
    /// Distinct prefixes, sorted.
    nodes: Vec<Node>,
    /// The rules of each node, `nodes[i].start..nodes[i].end`.
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Node {
    prefix: Box<str>,
    /// The longest other node whose prefix starts this one, or [`NONE`].
    parent: u32,
    start: u32,
    end: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    suffix: Box<str>,
    rule: u32,
    target: u32,
}

impl EventIndex {
    fn build(rules: &[NotificationRule], rule_targets: &[u32], event: EventName) -> EventIndex {
        let mut picked: Vec<(&str, u32)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.events.contains(event))
            .map(|(i, r)| (r.prefix(), i as u32))
            .collect();
        picked.sort();
        let mut index = EventIndex::default();
        let mut ancestors: Vec<u32> = Vec::new();
        for (prefix, rule) in picked {
            let new_node = index.nodes.last().is_none_or(|n| *n.prefix != *prefix);
            if new_node {
                // Sorted order is a depth-first walk of the prefix tree: pop
                // until the top of the stack starts this prefix.
                while let Some(&top) = ancestors.last() {
                    if prefix.starts_with(&*index.nodes[top as usize].prefix) {
                        break;
                    }
                    ancestors.pop();
                }
                let at = index.entries.len() as u32;
                index.nodes.push(Node {
                    prefix: prefix.into(),
                    parent: ancestors.last().copied().unwrap_or(NONE),
                    start: at,
                    end: at,
                });
                ancestors.push(index.nodes.len() as u32 - 1);
            }
            index.entries.push(Entry {
                suffix: rules[rule as usize].suffix().into(),
                rule,
                target: rule_targets[rule as usize],
            });
            if let Some(node) = index.nodes.last_mut() {
                node.end += 1;
            }
        }
        index
    }

    /// The entries whose rules match `key`, deepest prefix first.
    #[inline]
    fn walk<'a>(&'a self, key: &'a str) -> Walk<'a> {
        let k = key.as_bytes();
        let mut node = self.nodes.partition_point(|n| n.prefix.as_bytes() <= k) as u32;
        node = node.wrapping_sub(1); // NONE when no prefix is <= the key
        while node != NONE {
            let n = &self.nodes[node as usize];
            if k.starts_with(n.prefix.as_bytes()) {
                return Walk {
                    index: self,
                    key: k,
                    node,
                    pos: n.start,
                    end: n.end,
                };
            }
            node = n.parent;
        }
        Walk {
            index: self,
            key: k,
            node: NONE,
            pos: 0,
            end: 0,
        }
    }
}

/// Iterates the entries matching one key (see [`EventIndex::walk`]).
struct Walk<'a> {
    index: &'a EventIndex,
    key: &'a [u8],
    node: u32,
    pos: u32,
    end: u32,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a Entry;

    #[inline]
    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            while self.pos < self.end {
                let e = &self.index.entries[self.pos as usize];
                self.pos += 1;
                if self.key.ends_with(e.suffix.as_bytes()) {
                    return Some(e);
                }
            }
            if self.node == NONE {
                return None;
            }
            // Every ancestor's prefix starts the key too.
            self.node = self.index.nodes[self.node as usize].parent;
            if self.node == NONE {
                return None;
            }
            let n = &self.index.nodes[self.node as usize];
            self.pos = n.start;
            self.end = n.end;
        }
    }
}

/// Target indices without duplicates; the first few inline.
struct Hits {
    inline: [u32; 8],
    len: usize,
    spill: Vec<u32>,
    pos: usize,
}

impl Hits {
    fn push_unique(&mut self, t: u32) {
        if self.inline[..self.len].contains(&t) || self.spill.contains(&t) {
            return;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = t;
            self.len += 1;
        } else {
            self.spill.push(t);
        }
    }
}

impl Iterator for Hits {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let i = self.pos;
        self.pos += 1;
        if i < self.len {
            Some(self.inline[i])
        } else {
            self.spill.get(i - self.len).copied()
        }
    }
}

impl RuleSet {
    /// Builds a rule set. Each rule must pass
    /// [`NotificationRule::validate`]; overlapping rules are allowed (MinIO's
    /// behaviour): a key matched by several rules reaches each distinct
    /// destination once.
    pub fn new(rules: impl IntoIterator<Item = NotificationRule>) -> Result<RuleSet> {
        let rules: Vec<NotificationRule> = rules.into_iter().collect();
        let mut targets: Vec<Arn> = Vec::new();
        let mut seen: HashMap<&Arn, u32> = HashMap::new();
        let mut rule_targets = Vec::with_capacity(rules.len());
        for rule in &rules {
            rule.validate()?;
            let t = *seen.entry(&rule.target).or_insert_with(|| {
                targets.push(rule.target.clone());
                targets.len() as u32 - 1
            });
            rule_targets.push(t);
        }
        let by_event = EventName::ALL
            .iter()
            .map(|&e| EventIndex::build(&rules, &rule_targets, e))
            .collect();
        Ok(RuleSet {
            rules,
            targets,
            by_event,
        })
    }

    /// Validates `config` ([`NotificationConfiguration::validate`], overlaps
    /// included) and builds a rule set from its rules.
    pub fn from_config(config: &NotificationConfiguration) -> Result<RuleSet> {
        config.validate()?;
        RuleSet::new(config.rules.iter().cloned())
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[NotificationRule] {
        &self.rules
    }

    /// The distinct destinations, in order of first appearance among the
    /// rules; [`RuleSet::match_into`] yields indices into this slice.
    pub fn targets(&self) -> &[Arn] {
        &self.targets
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules matching `event` on the decoded object `key`.
    pub fn matching_rules<'a>(
        &'a self,
        event: EventName,
        key: &'a str,
    ) -> impl Iterator<Item = &'a NotificationRule> + 'a {
        self.by_event[event as usize]
            .walk(key)
            .map(move |e| &self.rules[e.rule as usize])
    }

    /// The distinct destinations of the rules matching `event` on the decoded
    /// object `key`.
    pub fn matches(&self, event: EventName, key: &str) -> impl Iterator<Item = &Arn> + '_ {
        let mut hits = Hits {
            inline: [0; 8],
            len: 0,
            spill: Vec::new(),
            pos: 0,
        };
        for e in self.by_event[event as usize].walk(key) {
            hits.push_unique(e.target);
        }
        hits.map(move |t| &self.targets[t as usize])
    }

    /// Clears `out` and fills it with the indices (into
    /// [`RuleSet::targets`]) of the distinct destinations of the rules
    /// matching `event` on the decoded object `key`. Allocation-free once
    /// `out` has room.
    #[inline]
    pub fn match_into(&self, event: EventName, key: &str, out: &mut Vec<usize>) {
        out.clear();
        for e in self.by_event[event as usize].walk(key) {
            let t = e.target as usize;
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }

    /// The distinct destinations for a record: its `eventName` parsed
    /// ([`EventRecord::parsed_event_name`]) and its key URL-decoded
    /// ([`EventRecord::decoded_key`]). An unknown event name or an
    /// undecodable key is an error.
    pub fn matches_record(&self, record: &EventRecord) -> Result<impl Iterator<Item = &Arn> + '_> {
        let event = record.parsed_event_name()?;
        let key = record.decoded_key()?;
        Ok(self.matches(event, &key))
    }
}

impl TryFrom<&NotificationConfiguration> for RuleSet {
    type Error = Error;
    fn try_from(config: &NotificationConfiguration) -> Result<RuleSet> {
        RuleSet::from_config(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's `PutBucketNotificationConfiguration` reference,
    /// with a filter added to the queue.
    const AWS_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <TopicConfiguration>
    <Id>YjVkM2Y0YmUtNGI3NC00ZjQyLWEwNGItNDIyYWUxY2I0N2M4</Id>
    <Topic>arn:aws:sns:us-east-1:356671443308:s3notificationtopic2</Topic>
    <Event>s3:ReducedRedundancyLostObject</Event>
  </TopicConfiguration>
  <QueueConfiguration>
    <Id>ObjectCreatedEvents</Id>
    <Filter>
      <S3Key>
        <FilterRule>
          <Name>Prefix</Name>
          <Value>images/</Value>
        </FilterRule>
        <FilterRule>
          <Name>suffix</Name>
          <Value>.jpg</Value>
        </FilterRule>
      </S3Key>
    </Filter>
    <Queue>arn:aws:sqs:us-east-1:356671443308:s3notificationqueue</Queue>
    <Event>s3:ObjectCreated:*</Event>
  </QueueConfiguration>
</NotificationConfiguration>"#;

    const AWS_JSON: &str = r#"{
  "TopicConfigurations": [{
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:s3-notification-topic",
    "Events": ["s3:ObjectCreated:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "images/"}]}}
  }],
  "QueueConfigurations": [{
    "Id": "removals",
    "QueueArn": "arn:aws:sqs:us-west-2:123456789012:s3-notification-queue",
    "Events": ["s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated"],
    "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "logs/"}, {"Name": "Suffix", "Value": ".gz"}]}}
  }],
  "LambdaFunctionConfigurations": [{
    "Id": "thumbnails",
    "LambdaFunctionArn": "arn:aws:lambda:us-west-2:123456789012:function:thumbnail",
    "Events": ["s3:ObjectCreated:Put"],
    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}
  }],
  "EventBridgeConfiguration": {}
}"#;

    fn queue(id: &str) -> NotificationRule {
        let arn: Arn = format!("arn:aws:sqs:us-east-1:1:{id}").parse().unwrap();
        NotificationRule::new(id, EventName::ObjectCreatedPut.mask(), arn)
    }

    fn err_of(r: Result<NotificationConfiguration>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn parses_aws_xml_with_two_configurations() {
        let c = NotificationConfiguration::from_xml(AWS_XML).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert!(!c.event_bridge);
        let topic = &c.rules[0];
        assert_eq!(topic.id, "YjVkM2Y0YmUtNGI3NC00ZjQyLWEwNGItNDIyYWUxY2I0N2M4");
        assert_eq!(topic.events, EventName::ReducedRedundancyLostObject.mask());
        assert_eq!(topic.target.as_aws().unwrap().service(), AwsService::Sns);
        assert!(topic.filter.is_empty());
        let q = &c.rules[1];
        assert_eq!(q.id, "ObjectCreatedEvents");
        assert_eq!(
            q.events,
            EventMask::from_pattern("s3:ObjectCreated:*").unwrap()
        );
        assert_eq!((q.prefix(), q.suffix()), ("images/", ".jpg"));
        assert_eq!(
            q.target.to_string(),
            "arn:aws:sqs:us-east-1:356671443308:s3notificationqueue"
        );
    }

    #[test]
    fn xml_round_trips() {
        let c = NotificationConfiguration::from_xml(AWS_XML).unwrap();
        let xml = c.to_xml();
        assert!(xml.contains(
            r#"<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#
        ));
        assert!(xml.contains("<Event>s3:ObjectCreated:*</Event>"), "{xml}");
        assert!(xml.contains("<Topic>arn:aws:sns:"), "{xml}");
        assert_eq!(NotificationConfiguration::from_xml(&xml).unwrap(), c);

        let odd = NotificationConfiguration::new(vec![queue("a&b")
            .with_prefix("<x> & 'y'/")
            .with_suffix(" .txt ")]);
        let back = NotificationConfiguration::from_xml(&odd.to_xml()).unwrap();
        assert_eq!(back, odd);
    }

    #[test]
    fn xml_without_namespace_minio_targets_and_entities() {
        let xml = "<NotificationConfiguration><QueueConfiguration>\
            <Queue>arn:minio:sqs::1:webhook</Queue><Event>s3:ObjectAccessed:*</Event>\
            <Event>ObjectCreated:Put</Event>\
            <Filter><S3Key><FilterRule><Name>prefix</Name><Value>a&amp;b&#x2F;<![CDATA[<c>]]></Value></FilterRule></S3Key></Filter>\
            </QueueConfiguration><EventBridgeConfiguration/></NotificationConfiguration>";
        let c = NotificationConfiguration::from_xml(xml).unwrap();
        assert!(c.event_bridge);
        let r = &c.rules[0];
        assert_eq!(r.id, "rule-1");
        assert_eq!(r.prefix(), "a&b/<c>");
        assert_eq!(r.events.len(), 6);
        assert_eq!(r.target.as_target_id().unwrap().kind(), "webhook");
    }

    #[test]
    fn empty_configuration() {
        for xml in [
            "<NotificationConfiguration/>",
            r#"<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></NotificationConfiguration>"#,
        ] {
            assert_eq!(
                NotificationConfiguration::from_xml(xml).unwrap(),
                NotificationConfiguration::default()
            );
        }
        assert_eq!(
            NotificationConfiguration::from_json("{}").unwrap(),
            NotificationConfiguration::default()
        );
    }

    #[test]
    fn malformed_xml_is_an_xml_error() {
        for bad in [
            "",
            "<NotificationConfiguration>",
            "<NotificationConfiguration></Other>",
            "<Other/>",
            "<NotificationConfiguration><Bogus/></NotificationConfiguration>",
            "<NotificationConfiguration/><NotificationConfiguration/>",
            "<NotificationConfiguration>&nbsp;</NotificationConfiguration>",
        ] {
            let e = NotificationConfiguration::from_xml(bad).unwrap_err();
            assert!(matches!(e, Error::Xml { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_aws_json() {
        let c = NotificationConfiguration::from_json(AWS_JSON).unwrap();
        assert!(c.event_bridge);
        let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["removals", "rule-2", "thumbnails"]);
        assert_eq!((c.rules[0].prefix(), c.rules[0].suffix()), ("logs/", ".gz"));
        assert_eq!(c.rules[0].events.len(), 2);
        assert_eq!(
            c.rules[1].target.as_aws().unwrap().service(),
            AwsService::Sns
        );
        assert_eq!(
            c.rules[2].target.as_aws().unwrap().resource(),
            "function:thumbnail"
        );

        // Round trips through JSON, XML and serde.
        assert_eq!(
            NotificationConfiguration::from_json(&c.to_json()).unwrap(),
            c
        );
        assert_eq!(NotificationConfiguration::from_xml(&c.to_xml()).unwrap(), c);
        let v: NotificationConfiguration = serde_json::from_str(AWS_JSON).unwrap();
        assert_eq!(v, c);
        assert_eq!(serde_json::to_string(&c).unwrap(), c.to_json());
    }

    #[test]
    fn json_errors() {
        let e = NotificationConfiguration::from_json(r#"{"QueueConfigurationz": []}"#).unwrap_err();
        assert!(matches!(e, Error::Json { .. }), "{e}");
        let e = err_of(NotificationConfiguration::from_json(
            r#"{"QueueConfigurations": [{"Id": "q", "TopicArn": "arn:aws:sns:r:1:t", "Events": ["s3:ObjectCreated:*"]}]}"#,
        ));
        assert!(
            e.contains("`q`") && e.contains("`TopicArn` does not belong"),
            "{e}"
        );
        let e = serde_json::from_str::<NotificationConfiguration>(
            r#"{"QueueConfigurations": [{"Id": "q", "QueueArn": "arn:aws:sqs:r:1:q", "Events": ["s3:Nope"]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown event name `s3:Nope`"),
            "{e}"
        );
    }

    #[test]
    fn each_validation_error_names_the_rule_and_the_problem() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "<QueueConfiguration><Id>two-prefixes</Id><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectCreated:*</Event>\
                 <Filter><S3Key><FilterRule><Name>prefix</Name><Value>a</Value></FilterRule>\
                 <FilterRule><Name>prefix</Name><Value>b</Value></FilterRule></S3Key></Filter></QueueConfiguration>",
                "two-prefixes",
                &["more than one prefix"],
            ),
            (
                "<QueueConfiguration><Id>two-suffixes</Id><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectCreated:*</Event>\
                 <Filter><S3Key><FilterRule><Name>suffix</Name><Value>a</Value></FilterRule>\
                 <FilterRule><Name>SUFFIX</Name><Value>b</Value></FilterRule></S3Key></Filter></QueueConfiguration>",
                "two-suffixes",
                &["more than one suffix"],
            ),
            (
                "<QueueConfiguration><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectCreated:Pot</Event></QueueConfiguration>",
                "rule-1",
                &["unknown event name `s3:ObjectCreated:Pot`"],
            ),
            (
                "<QueueConfiguration><Id>bad-filter</Id><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectCreated:*</Event>\
                 <Filter><S3Key><FilterRule><Name>infix</Name><Value>a</Value></FilterRule></S3Key></Filter></QueueConfiguration>",
                "bad-filter",
                &["unknown filter rule name `infix`"],
            ),
            (
                "<QueueConfiguration><Id>no-events</Id><Queue>arn:aws:sqs:r:1:q</Queue></QueueConfiguration>",
                "no-events",
                &["no events"],
            ),
            (
                "<QueueConfiguration><Id>no-queue</Id><Event>s3:ObjectCreated:*</Event></QueueConfiguration>",
                "no-queue",
                &["`Queue` is missing"],
            ),
            (
                "<TopicConfiguration><Id>wrong-kind</Id><Topic>arn:aws:sqs:r:1:q</Topic><Event>s3:ObjectCreated:*</Event></TopicConfiguration>",
                "wrong-kind",
                &["`Topic` must be an SNS topic ARN"],
            ),
            (
                "<QueueConfiguration><Id>bad-arn</Id><Queue>arn:aws:sqs:r:1</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration>",
                "bad-arn",
                &["invalid ARN `arn:aws:sqs:r:1`"],
            ),
            (
                "<QueueConfiguration><Id>typo</Id><Queue>arn:aws:sqs:r:1:q</Queue><Events>s3:ObjectCreated:*</Events></QueueConfiguration>",
                "typo",
                &["unknown element `Events`"],
            ),
            (
                "<QueueConfiguration><Id>dup</Id><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration>\
                 <QueueConfiguration><Id>dup</Id><Queue>arn:aws:sqs:r:1:q</Queue><Event>s3:ObjectRemoved:*</Event></QueueConfiguration>",
                "dup",
                &["used by rules 1 and 2"],
            ),
        ];
        for (body, rule, words) in cases {
            let xml = format!("<NotificationConfiguration>{body}</NotificationConfiguration>");
            let e = NotificationConfiguration::from_xml(&xml).unwrap_err();
            let Error::InvalidRule { rule: named, .. } = &e else {
                panic!("{rule}: {e}");
            };
            assert_eq!(named, rule, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{rule}`")), "{msg}");
            for w in *words {
                assert!(msg.contains(w), "{rule}: {msg}");
            }
        }
    }

    #[test]
    fn long_filter_values_are_rejected() {
        let ok = NotificationConfiguration::new(vec![queue("ok").with_prefix("p".repeat(1024))]);
        ok.validate().unwrap();
        let long =
            NotificationConfiguration::new(vec![queue("long").with_suffix("s".repeat(1025))]);
        let e = long.validate().unwrap_err().to_string();
        assert!(
            e.contains("`long`") && e.contains("suffix filter value is 1025 bytes"),
            "{e}"
        );
    }

    #[test]
    fn overlapping_rules_are_ambiguous() {
        let overlapping = [
            (queue("a"), queue("b")),
            (queue("a").with_prefix("images/"), queue("b")),
            (
                queue("a").with_prefix("images"),
                queue("b").with_prefix("images/"),
            ),
            (
                queue("a").with_suffix(".jpg"),
                queue("b").with_suffix("jpg"),
            ),
            (
                queue("a").with_prefix("images/"),
                queue("b").with_suffix(".jpg"),
            ),
            (
                queue("a").with_prefix("x").with_suffix(".jpg"),
                queue("b").with_prefix("x").with_suffix(".jpg"),
            ),
        ];
        for (a, b) in overlapping {
            let e = NotificationConfiguration::new(vec![a, b])
                .validate()
                .unwrap_err();
            match &e {
                Error::AmbiguousRules {
                    first,
                    second,
                    events,
                } => {
                    assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
                    assert_eq!(events, "s3:ObjectCreated:Put");
                }
                other => panic!("{other}"),
            }
            let msg = e.to_string();
            assert!(
                msg.contains("`a`") && msg.contains("`b`") && msg.contains("s3:ObjectCreated:Put"),
                "{msg}"
            );
        }
        let distinct = [
            (
                queue("a").with_prefix("images/"),
                queue("b").with_prefix("docs/"),
            ),
            (
                queue("a").with_suffix(".jpg"),
                queue("b").with_suffix(".png"),
            ),
            (
                queue("a").with_prefix("x").with_suffix(".jpg"),
                queue("b").with_prefix("x").with_suffix(".png"),
            ),
            (queue("a"), {
                let mut b = queue("b");
                b.events = EventName::ObjectRemovedDelete.mask();
                b
            }),
        ];
        for (a, b) in distinct {
            NotificationConfiguration::new(vec![a, b])
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn rule_set_routes_by_event_prefix_and_suffix() {
        let c = NotificationConfiguration::from_json(AWS_JSON).unwrap();
        let rs = RuleSet::from_config(&c).unwrap();
        let hit =
            |e: EventName, k: &str| rs.matches(e, k).map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hit(EventName::ObjectRemovedDelete, "logs/x.gz"),
            ["arn:aws:sqs:us-west-2:123456789012:s3-notification-queue"]
        );
        assert!(hit(EventName::ObjectRemovedDelete, "logs/x.txt").is_empty());
        assert!(hit(EventName::ObjectRemovedDelete, "x/logs/x.gz").is_empty());
        // The SNS topic gets every created object under images/; the Lambda
        // only puts under uploads/.
        assert_eq!(
            hit(EventName::ObjectCreatedCopy, "images/a.png"),
            ["arn:aws:sns:us-west-2:123456789012:s3-notification-topic"]
        );
        assert_eq!(
            hit(EventName::ObjectCreatedPut, "uploads/a.png"),
            ["arn:aws:lambda:us-west-2:123456789012:function:thumbnail"]
        );
        assert!(hit(EventName::ObjectCreatedCopy, "uploads/a.png").is_empty());
        assert!(hit(EventName::ObjectAccessedGet, "images/a.png").is_empty());
        let rules: Vec<&str> = rs
            .matching_rules(EventName::ObjectCreatedPut, "images/a.png")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(rules, ["rule-2"]);

        let mut out = Vec::new();
        rs.match_into(
            EventName::ObjectRemovedDeleteMarkerCreated,
            "logs/a.gz",
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            rs.targets()[out[0]].as_aws().unwrap().service(),
            AwsService::Sqs
        );
    }

    #[test]
    fn rule_set_allows_overlaps_and_dedups_targets() {
        let t: Arn = "arn:minio:sqs::1:webhook".parse().unwrap();
        let u: Arn = "arn:minio:sqs::2:kafka".parse().unwrap();
        let all = EventMask::ALL;
        let rs = RuleSet::new([
            NotificationRule::new("r1", all, t.clone()),
            NotificationRule::new("r2", all, t.clone()).with_prefix("a/"),
            NotificationRule::new("r3", all, u.clone())
                .with_prefix("a/b")
                .with_suffix(".txt"),
            NotificationRule::new("r4", all, t.clone()).with_prefix("a/c"),
        ])
        .unwrap();
        assert_eq!(rs.targets(), [t.clone(), u.clone()]);
        let got: Vec<&Arn> = rs
            .matches(EventName::ObjectCreatedPut, "a/b/c.txt")
            .collect();
        assert_eq!(got, [&u, &t]);
        let ids: Vec<&str> = rs
            .matching_rules(EventName::ObjectCreatedPut, "a/b/c.txt")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["r3", "r2", "r1"]);
        assert_eq!(
            rs.matches(EventName::ObjectCreatedPut, "zzz")
                .collect::<Vec<_>>(),
            [&t]
        );
        assert_eq!(rs.matches(EventName::TestEvent, "a/b/c.txt").count(), 0);

        let bad = RuleSet::new([NotificationRule::new("empty", EventMask::EMPTY, t)]).unwrap_err();
        assert!(bad.to_string().contains("`empty`"), "{bad}");
    }

    #[test]
    fn rule_set_routes_records() {
        let t: Arn = "arn:minio:sqs::1:webhook".parse().unwrap();
        let rs = RuleSet::new([NotificationRule::new(
            "r",
            EventMask::from_pattern("s3:ObjectCreated:*").unwrap(),
            t.clone(),
        )
        .with_prefix("red flower")])
        .unwrap();
        let rec = EventRecord::from_slice(
            br#"{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"red+flower.jpg"}}}"#,
        )
        .unwrap();
        assert_eq!(rs.matches_record(&rec).unwrap().collect::<Vec<_>>(), [&t]);
        let aws = EventRecord::from_slice(
            br#"{"eventName":"ObjectCreated:Copy","s3":{"object":{"key":"red%20flower"}}}"#,
        )
        .unwrap();
        assert_eq!(rs.matches_record(&aws).unwrap().count(), 1);
        let unknown = EventRecord::from_slice(
            br#"{"eventName":"Bogus","s3":{"object":{"key":"red+flower"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            rs.matches_record(&unknown),
            Err(Error::UnknownEventName { .. })
        ));
    }
}

//! The crate's one error type.

/// Everything that can go wrong in `s3-event-core`.
///
/// Every variant names what was wrong (the field, rule, attribute or input) so
/// that a message shown to a sender or an operator says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A JSON document did not have the expected shape.
    #[error("invalid JSON in {what}{}: {source}", at_path(path))]
    Json {
        /// What was being parsed (e.g. "S3 event notification").
        what: &'static str,
        /// Where in the document the bad value is (`Records[0].s3.object.size`);
        /// empty when the document is not valid JSON at all.
        path: String,
        /// The underlying parser error (it carries line and column).
        #[source]
        source: serde_json::Error,
    },
    /// An XML document did not have the expected shape.
    #[error("invalid XML in {what}: {message}")]
    Xml {
        /// What was being parsed (e.g. "NotificationConfiguration").
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// An event name that is neither an AWS nor a MinIO/AIStor event name.
    #[error("unknown event name `{name}`")]
    UnknownEventName {
        /// The name as given.
        name: String,
    },
    /// A notification rule is invalid on its own.
    #[error("invalid notification rule `{rule}`: {message}")]
    InvalidRule {
        /// The rule's id (`Id` in the configuration; an index when it has none).
        rule: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two rules overlap for the same event types (AWS's "Configuration is
    /// ambiguously defined").
    #[error(
        "configuration is ambiguously defined: rules `{first}` and `{second}` overlap \
         for event types {events} (prefixes and suffixes overlap)"
    )]
    AmbiguousRules {
        /// The id of the first rule.
        first: String,
        /// The id of the second rule.
        second: String,
        /// The event types both rules match.
        events: String,
    },
    /// An ARN or target id that could not be parsed.
    #[error("invalid ARN `{arn}`: {reason}")]
    InvalidArn {
        /// The text as given.
        arn: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A payload given to [`crate::inbound::parse`] that is not a recognised
    /// notification, envelope or confirmation.
    #[error("unrecognised inbound payload: {reason}")]
    Inbound {
        /// What was wrong with it.
        reason: String,
    },
    /// A CloudEvent that cannot be mapped to or from an S3 event record.
    #[error("CloudEvent attribute `{attribute}`: {message}")]
    CloudEvent {
        /// The attribute that is missing or bad (e.g. `data`, `type`).
        attribute: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// AWS connection settings that cannot be used (feature `aws`).
    #[error("AWS configuration `{field}`: {message}")]
    Aws {
        /// The setting that is missing or bad (`endpoint`, `credentials`,
        /// `secret_access_key`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A partitioner could not be built or could not place an event.
    #[error("partitioner: {message}")]
    Partition {
        /// What is wrong.
        message: String,
    },
}

fn at_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl Error {
    /// A JSON error for `bytes` parsed as `T`, with the path of the bad value
    /// found by parsing again (only on this error path, so the fast parse
    /// pays nothing for it).
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        what: &'static str,
        bytes: &[u8],
        source: serde_json::Error,
    ) -> Error {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) if source.is_data() => e.path().to_string(),
            _ => String::new(),
        };
        Error::Json { what, path, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

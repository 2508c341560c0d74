//! The error type of this crate.

use std::path::PathBuf;

/// Errors returned by this crate.
///
/// Every variant carries the context needed to act on it (the file, the queue
/// directory, the limit) so that a log line alone says what went wrong where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed; `source` holds the cause.
    #[error("I/O error on `{}`", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The queue already holds `limit` unacknowledged entries; nothing was
    /// appended.
    #[error("queue `{}` is full ({limit} unacknowledged entries)", dir.display())]
    QueueFull {
        /// The queue directory.
        dir: PathBuf,
        /// The configured `queue_limit`.
        limit: usize,
    },

    /// A stored frame failed verification (checksum mismatch, or a length
    /// that runs past the end of its file). The entry is never delivered.
    #[error("corrupt frame in `{}` at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file that holds the frame.
        path: PathBuf,
        /// Byte offset of the frame in `path`.
        offset: u64,
        /// What failed.
        reason: &'static str,
    },

    /// An entry is larger than a frame can hold.
    #[error("entry of {len} bytes is larger than the maximum of {max} bytes")]
    EntryTooLarge {
        /// Size of the rejected entry.
        len: usize,
        /// The largest size accepted.
        max: usize,
    },

    /// An option has a value outside its valid range.
    #[error("invalid option `{option}`: {rule}")]
    InvalidOption {
        /// The option's name, as spelled in its struct.
        option: &'static str,
        /// The rule the value broke, e.g. "`queue_limit` must be > 0".
        rule: &'static str,
    },

    /// A notification rule names a target ARN that no configured target has.
    #[error("rule target `{arn}` names no configured target")]
    UnknownTarget {
        /// The ARN, as written in the rule.
        arn: String,
    },

    /// Two targets were configured with the same id.
    #[error("target `{id}` is configured twice")]
    DuplicateTarget {
        /// The duplicated target id.
        id: String,
    },

    /// A record could not be routed: its event name does not parse or its
    /// key does not decode.
    #[error("cannot route record with event name `{event_name}`")]
    InvalidRecord {
        /// The record's `eventName` as sent (empty when missing).
        event_name: String,
        /// The parse or decode error (it names the key when that failed).
        #[source]
        source: s3_event_core::Error,
    },

    /// A target's configuration is invalid. The message names the key and
    /// the rule, e.g. "`endpoint` is required".
    #[error("{target}: {message}")]
    InvalidConfig {
        /// The target, as `<type> <id>` (e.g. "webhook 1").
        target: String,
        /// The offending key, spelled as in MinIO's configuration.
        key: &'static str,
        /// What is wrong, naming the key.
        message: String,
    },

    /// Sync mode: a target neither delivered nor dead-lettered a record
    /// that was queued for it (its queue entry was found corrupt on disk
    /// and dropped, or its outcome is no longer known).
    #[error("record not delivered to target `{target}`: {reason}")]
    NotDelivered {
        /// The target's ARN.
        target: String,
        /// What happened.
        reason: String,
    },

    /// The notifier is shutting down and accepts no more records.
    #[error("the notifier is shut down")]
    Shutdown,

    /// A target's configuration has a key its type does not know.
    #[error("{target}: unknown key `{key}`")]
    UnknownKey {
        /// The target, as `<type> <id>` (e.g. "webhook 1").
        target: String,
        /// The key, as written.
        key: String,
    },

    /// The notification configuration names a target type this crate does
    /// not know.
    #[error("unknown notification target type `{kind}`")]
    UnknownTargetType {
        /// The type, as written (lower case).
        kind: String,
    },

    /// The notification configuration uses a target type whose cargo
    /// feature is not compiled in.
    #[error(
        "notification target type `{kind}` needs the cargo feature `{feature}` of s3-event-targets"
    )]
    FeatureDisabled {
        /// The target type.
        kind: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },

    /// The notification configuration is malformed (bad JSON, wrong shape,
    /// an environment variable that names no key).
    #[error("{message}")]
    InvalidNotifyConfig {
        /// What is wrong.
        message: String,
    },

    /// The notification rules are invalid.
    #[error("invalid notification rules")]
    InvalidRules {
        /// The validation error.
        #[source]
        source: s3_event_core::Error,
    },

    /// The durable log under a queue failed: its directory is locked by
    /// another store, or an fsync covering these writes failed.
    #[error(transparent)]
    Log(s3_event_core::log::Error),
}

impl From<s3_event_core::log::Error> for Error {
    fn from(e: s3_event_core::log::Error) -> Self {
        match e {
            s3_event_core::log::Error::Io { path, source, .. } => Error::Io { path, source },
            s3_event_core::log::Error::TooLarge { len, max } => Error::EntryTooLarge { len, max },
            other => Error::Log(other),
        }
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error's message with its causes, on one line (for the targets built
/// on client libraries, whose errors keep the useful part in a cause).
#[allow(dead_code)] // Unused when no such target is compiled in.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

//! What the relay and the ingest pipeline share about their `sqs` input:
//! its effective configuration for `--check-config`, and its line in the
//! startup description.

use serde_json::Value;

use crate::inputs::sqs::SqsSourceConfig;

/// The effective `sqs` configuration, the secret access key and session
/// token replaced by `***`.
pub(crate) fn redacted(c: &SqsSourceConfig) -> Value {
    let secret = |v: &Option<String>| v.as_ref().map(|_| "***");
    serde_json::json!({
        "queue_url": c.queue_url,
        "aws": {
            "region": c.aws.region,
            "endpoint": c.aws.endpoint,
            "access_key_id": c.aws.access_key_id,
            "secret_access_key": secret(&c.aws.secret_access_key),
            "session_token": secret(&c.aws.session_token),
        },
        "wait_time_secs": c.wait_time_secs,
        "max_messages": c.max_messages,
        "receivers": c.receivers,
        "visibility_timeout_secs": c.visibility_timeout_secs,
        "sns": {
            "verify_signatures": c.sns.verify_signatures,
            "verify_sqs_wrapped": c.sns.verify_sqs_wrapped,
            "topic_arns": c.sns.topic_arns,
            "certificate_file": c.sns.certificate_file,
        },
    })
}

/// One line for the startup description.
pub(crate) fn describe(c: &SqsSourceConfig) -> String {
    format!(
        "receiving from SQS queue {} ({} receiver(s), wait {} s, visibility {} s)",
        c.queue_url.trim(),
        c.receivers,
        c.wait_time_secs,
        c.visibility_timeout_secs
    )
}

//! SNS message verification: the canonical string, the certificate URL
//! check, the certificate, the signature and the timestamp.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use s3_event_core::inbound::SnsMessage;
use x509_cert::der::{Decode, DecodePem};
use x509_cert::Certificate;

use super::Rejection;

/// `rsaEncryption`.
const RSA_ENCRYPTION: x509_cert::spki::ObjectIdentifier =
    x509_cert::spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Whether `host` is `sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`),
/// with a region such as `us-east-1` or `us-gov-west-1`.
pub fn is_sns_host(host: &str) -> bool {
    let rest = match host.strip_prefix("sns.") {
        Some(r) => r,
        None => return false,
    };
    let region = match rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
    {
        Some(r) => r,
        None => return false,
    };
    !region.is_empty()
        && region.contains('-')
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_sns_url(raw: &str, what: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{what} `{raw}` is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("{what} `{raw}` is not https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} `{raw}` carries credentials"));
    }
    if url.port().is_some_and(|p| p != 443) {
        return Err(format!("{what} `{raw}` has a port other than 443"));
    }
    match url.host() {
        Some(url::Host::Domain(h)) if is_sns_host(h) => Ok(url),
        _ => Err(format!(
            "{what} `{raw}` is not on an sns.<region>.amazonaws.com host"
        )),
    }
}

/// Checks a `SigningCertURL`: `https://sns.<region>.amazonaws.com/...pem`,
/// no credentials, no port other than 443.
pub fn check_cert_url(raw: &str) -> Result<url::Url, String> {
    let url = check_sns_url(raw, "SigningCertURL")?;
    if !url.path().ends_with(".pem") {
        return Err(format!("SigningCertURL `{raw}` does not name a .pem file"));
    }
    Ok(url)
}

/// Checks a `SubscribeURL`: `https://sns.<region>.amazonaws.com/...`.
pub fn check_subscribe_url(raw: &str) -> Result<url::Url, String> {
    check_sns_url(raw, "SubscribeURL")
}

/// The string SNS signs: `Name\nvalue\n` for each field, in AWS's order —
/// `Message`, `MessageId`, `Subject` (when present), `Timestamp`,
/// `TopicArn`, `Type` for notifications; `Message`, `MessageId`,
/// `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type` for
/// (un)subscribe confirmations.
pub fn canonical_string(m: &SnsMessage) -> Result<String, String> {
    let ty = m.message_type.as_deref().unwrap_or_default();
    let fields: Vec<(&str, Option<&String>)> = match ty {
        "Notification" => {
            let mut f = vec![("Message", m.message.as_ref())];
            f.push(("MessageId", m.message_id.as_ref()));
            if m.subject.is_some() {
                f.push(("Subject", m.subject.as_ref()));
            }
            f.push(("Timestamp", m.timestamp.as_ref()));
            f.push(("TopicArn", m.topic_arn.as_ref()));
            f.push(("Type", m.message_type.as_ref()));
            f
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => vec![
            ("Message", m.message.as_ref()),
            ("MessageId", m.message_id.as_ref()),
            ("SubscribeURL", m.subscribe_url.as_ref()),
            ("Timestamp", m.timestamp.as_ref()),
            ("Token", m.token.as_ref()),
            ("TopicArn", m.topic_arn.as_ref()),
            ("Type", m.message_type.as_ref()),
        ],
        other => return Err(format!("cannot sign SNS message Type `{other}`")),
    };
    let mut out = String::new();
    for (name, value) in fields {
        let v = value.ok_or_else(|| format!("`{name}` is missing"))?;
        out.push_str(name);
        out.push('\n');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

/// Refuses a notification whose `Timestamp` is older than `max_age` or
/// further than `skew` in the future.
pub(super) fn check_timestamp(
    m: &SnsMessage,
    max_age: Duration,
    skew: Duration,
    enforce: bool,
) -> Result<(), Rejection> {
    if !enforce {
        return Ok(());
    }
    let raw = m.timestamp.as_deref().unwrap_or_default();
    let ts = chrono::DateTime::parse_from_rfc3339(raw)
        .map_err(|e| Rejection::Forged(format!("Timestamp `{raw}` is not RFC 3339: {e}")))?;
    let now = chrono::Utc::now();
    let age = now.signed_duration_since(ts);
    if age > chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX) {
        return Err(Rejection::Replayed(format!(
            "Timestamp `{raw}` is older than {} s",
            max_age.as_secs()
        )));
    }
    if -age > chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX) {
        return Err(Rejection::Forged(format!(
            "Timestamp `{raw}` is more than {} s in the future",
            skew.as_secs()
        )));
    }
    Ok(())
}

/// An SNS signing certificate: its RSA public key and validity period.
#[derive(Clone, Debug)]
pub struct SigningCertificate {
    rsa_public_key: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl SigningCertificate {
    /// Parses a certificate, PEM or DER, with an RSA key.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let cert = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            Certificate::from_pem(bytes).map_err(|e| format!("bad PEM certificate: {e}"))?
        } else {
            Certificate::from_der(bytes).map_err(|e| format!("bad DER certificate: {e}"))?
        };
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(format!(
                "certificate key is {}, not RSA",
                spki.algorithm.oid
            ));
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("certificate key has unused bits")?;
        Ok(SigningCertificate {
            rsa_public_key: key.to_vec(),
            not_before: tbs.validity.not_before.to_system_time(),
            not_after: tbs.validity.not_after.to_system_time(),
        })
    }

    /// Refuses a certificate outside its validity period at `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), String> {
        if now < self.not_before {
            return Err("signing certificate is not valid yet".into());
        }
        if now > self.not_after {
            return Err("signing certificate has expired".into());
        }
        Ok(())
    }

    /// Verifies a base64 `signature` of `message` with SignatureVersion
    /// `version` (`1`: SHA1withRSA, `2`: SHA256withRSA).
    pub fn verify(&self, version: &str, message: &[u8], signature: &str) -> Result<(), String> {
        let alg: &dyn signature::VerificationAlgorithm = match version {
            "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(format!("SignatureVersion `{other}` is not 1 or 2")),
        };
        let sig = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|e| format!("Signature is not base64: {e}"))?;
        UnparsedPublicKey::new(alg, &self.rsa_public_key)
            .verify(message, &sig)
            .map_err(|_| "signature does not match the message".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_hosts() {
        for ok in [
            "sns.us-east-1.amazonaws.com",
            "sns.us-gov-west-1.amazonaws.com",
            "sns.cn-north-1.amazonaws.com.cn",
        ] {
            assert!(is_sns_host(ok), "{ok}");
        }
        for bad in [
            "sns.amazonaws.com",
            "sns..amazonaws.com",
            "evil.com",
            "sns.us-east-1.amazonaws.com.evil.com",
            "sns.us-east-1.evil.com",
            "xsns.us-east-1.amazonaws.com",
            "sns.US-EAST-1.amazonaws.com",
            "sns.us_east-1.amazonaws.com",
            "sns.a.b.amazonaws.com",
        ] {
            assert!(!is_sns_host(bad), "{bad}");
        }
    }

    #[test]
    fn cert_urls() {
        assert!(check_cert_url(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"
        )
        .is_ok());
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user:pw@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://1.2.3.4/x.pem",
            "not a url",
        ] {
            assert!(check_cert_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_strings() {
        let m = SnsMessage {
            message_type: Some("Notification".into()),
            message_id: Some("id".into()),
            topic_arn: Some("arn".into()),
            message: Some("hello".into()),
            timestamp: Some("2024-01-01T00:00:00.000Z".into()),
            ..Default::default()
        };
        assert_eq!(
            canonical_string(&m).unwrap(),
            "Message\nhello\nMessageId\nid\nTimestamp\n2024-01-01T00:00:00.000Z\nTopicArn\narn\nType\nNotification\n"
        );
        let with_subject = SnsMessage {
            subject: Some("s".into()),
            ..m.clone()
        };
        assert!(canonical_string(&with_subject)
            .unwrap()
            .contains("MessageId\nid\nSubject\ns\nTimestamp\n"));
        let confirm = SnsMessage {
            message_type: Some("SubscriptionConfirmation".into()),
            token: Some("tok".into()),
            subscribe_url: Some("https://sns.us-east-1.amazonaws.com/?x".into()),
            ..m
        };
        assert_eq!(
            canonical_string(&confirm).unwrap(),
            "Message\nhello\nMessageId\nid\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?x\n\
             Timestamp\n2024-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
    }
}

//! Mutual TLS: the webhook target against a TLS server on loopback that
//! requires a client certificate from a test CA (certificates generated with
//! rcgen). The server reads one HTTP request per connection and answers 200;
//! it records the common name of each verified client certificate.

use super::*;
use crate::core::TargetId;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "s3-event test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "webhook-client");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
    Pki {
        dir,
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    }
}

/// Starts the server; returns its port and the client names it accepted.
async fn server(pki: &Pki) -> (u16, Arc<Mutex<Vec<String>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let clients: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = clients.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // A handshake without a valid client certificate fails here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| client_name(c.as_ref()))
                    .unwrap_or_default();
                // One request: headers, then Content-Length bytes of body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                seen.lock().unwrap().push(cn);
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, clients)
}

/// Which client presented the (verified) certificate: the test's client
/// certificate carries the common name `webhook-client` in its DER.
fn client_name(der: &[u8]) -> String {
    let needle = b"webhook-client";
    if der.windows(needle.len()).any(|w| w == needle) {
        "webhook-client".into()
    } else {
        "another client".into()
    }
}

fn id() -> TargetId {
    "arn:minio:sqs::tls:webhook".parse().unwrap()
}

fn record() -> EventRecord {
    EventRecord::from_slice(
        br#"{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn mutual_tls_handshake_with_client_certificate() {
    let pki = pki();
    let (port, clients) = server(&pki).await;
    let mut c = WebhookConfig::new(format!("https://127.0.0.1:{port}/"));
    c.client_cert = Some(pki.dir.path().join("client.pem"));
    c.client_key = Some(pki.dir.path().join("client.key"));
    c.ca_cert = Some(pki.dir.path().join("ca.pem"));
    let t = WebhookTarget::new(id(), c).unwrap();
    t.send_batch(&[record()]).await.unwrap();
    assert_eq!(*clients.lock().unwrap(), ["webhook-client"]);
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses() {
    let pki = pki();
    let (port, clients) = server(&pki).await;
    let mut c = WebhookConfig::new(format!("https://127.0.0.1:{port}/"));
    c.ca_cert = Some(pki.dir.path().join("ca.pem"));
    let t = WebhookTarget::new(id(), c).unwrap();
    let e = t.send_batch(&[record()]).await.unwrap_err();
    assert!(matches!(e, TargetError::Transient { .. }), "{e}");
    assert!(clients.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_server_ca_is_refused() {
    let pki = pki();
    let (port, clients) = server(&pki).await;
    let mut c = WebhookConfig::new(format!("https://127.0.0.1:{port}/"));
    c.client_cert = Some(pki.dir.path().join("client.pem"));
    c.client_key = Some(pki.dir.path().join("client.key"));
    let t = WebhookTarget::new(id(), c).unwrap();
    assert!(t.send_batch(&[record()]).await.is_err());
    assert!(clients.lock().unwrap().is_empty());
}

#[test]
fn ca_cert_must_be_a_pem_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut c = WebhookConfig::new("https://127.0.0.1:1/");
    c.ca_cert = Some(bad);
    let e = WebhookTarget::new(id(), c).unwrap_err().to_string();
    assert!(e.contains("ca_cert"), "{e}");
}

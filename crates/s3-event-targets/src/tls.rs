//! rustls client configurations for the broker targets (ring provider; no
//! OpenSSL): the system's roots or a given CA file, an optional client
//! certificate, and MinIO's `tls_skip_verify`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What a target's TLS keys ask for.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsOptions<'a> {
    /// A PEM file of CA certificates; `None` uses the system's roots.
    pub ca: Option<&'a Path>,
    /// A PEM client certificate and its key, for mutual TLS.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Accept any server certificate (MinIO's `tls_skip_verify`).
    pub skip_verify: bool,
    /// Check the chain but not the host name (libpq's `sslmode=verify-ca`).
    pub skip_hostname: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for `opts`; errors are messages naming the
/// file at fault.
pub(crate) fn client_config(opts: &TlsOptions<'_>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match opts.ca {
            Some(ca) => {
                let certs = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("cannot read CA file `{}`: {e}", ca.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("bad CA file `{}`: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad CA certificate in `{}`: {e}", ca.display()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // Unparsable system certificates are skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        if opts.skip_hostname {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoNameCheck(inner)))
        } else {
            builder.with_root_certificates(roots)
        }
    };
    match opts.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read client certificate `{}`: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client key `{}`: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key do not match: {e}"))
        }
    }
}

/// Checks the chain like the WebPKI verifier it wraps but accepts a
/// certificate issued for another name (libpq's `verify-ca`).
#[derive(Debug)]
struct NoNameCheck(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts every server certificate; signatures are still checked so the
/// handshake itself stays sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! TLS to PostgreSQL with rustls (ring), per libpq's `sslmode`.
//!
//! rustls rather than OpenSSL: the plugin is loaded into every smtpd and imapd
//! process, and with rustls it needs no libssl/libcrypto of its own; the code
//! is only mapped, not run, until `db` names PostgreSQL with TLS (doc/design.md,
//! "What a Postfix process carries").
//!
//! - `Verify::None` (`prefer`, `require`): encrypted, the certificate not
//!   checked (libpq's meaning); the handshake signatures are still verified,
//!   so channel binding ties SCRAM to the key the server really holds.
//! - `Verify::Chain` (`verify-ca`, `require` with `sslrootcert`): the chain up
//!   to the CA file (or the system store), not the host name.
//! - `Verify::Full` (`verify-full`): the chain and the host name.
//!
//! A certificate listed in `sslrootcert` is trusted as is, so a server's
//! self-signed certificate can be its own root, as with libpq.
//!
//! Channel binding (`tls-server-end-point`, RFC 5929) is offered as
//! postgres-openssl did, so SCRAM-SHA-256-PLUS is used where the server has it.

use super::{Target, Verify};
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The connector for a target's `sslmode` and `sslrootcert`.
pub(super) fn connector(target: &Target) -> Result<MakeRustls> {
    // Deprecated for lacking post-quantum key exchange; what OpenSSL 3.0
    // (Debian 12) offered PostgreSQL before had none either, and aws-lc-rs
    // (the provider that has it) would put a second C crypto library into
    // every process that loads the plugin.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match target.verify {
        Verify::None => Arc::new(Unchecked(provider.clone())),
        Verify::Chain | Verify::Full => {
            let (roots, pinned) = trusted(target.root_cert.as_deref())?;
            Arc::new(Checked {
                roots,
                pinned,
                check_name: target.verify == Verify::Full,
                provider: provider.clone(),
            })
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("db: TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustls(Arc::new(config)))
}

/// The trusted CAs: the `sslrootcert` file (PEM, one or more), else the
/// system store (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's
/// bundle, as OpenSSL's default paths); and the file's certificates as such,
/// for a server whose self-signed certificate is its own root.
type Trusted = (Arc<RootCertStore>, Vec<CertificateDer<'static>>);

fn trusted(root_cert: Option<&str>) -> Result<Trusted> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match root_cert {
        Some(file) => {
            let bad =
                |e: &dyn std::fmt::Display| Error::Config(format!("db: sslrootcert {file}: {e}"));
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(&e))? {
                let cert = cert.map_err(|e| bad(&e))?;
                roots.add(cert.clone()).map_err(|e| bad(&e))?;
                pinned.push(cert);
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in the file"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "db: no trusted certificates in the system store ({}); set sslrootcert",
                    found
                        .errors
                        .first()
                        .map_or("none found".to_string(), |e| e.to_string())
                )));
            }
        }
    }
    Ok((Arc::new(roots), pinned))
}

/// `prefer`/`require`: any certificate, but a handshake signed by its key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

/// `verify-ca` and `verify-full`: the chain to a trusted CA (or the
/// certificate itself listed in `sslrootcert`), and for `verify-full` the host
/// name (in subjectAltName: webpki reads no common name).
#[derive(Debug)]
struct Checked {
    roots: Arc<RootCertStore>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        // The server's self-signed certificate given as sslrootcert is
        // trusted as is (webpki refuses a CA certificate as a leaf).
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &self.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's connector factory: one connection per host tried.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<ClientConfig>);

/// One TLS connection to one host.
pub(super) struct ConnectRustls {
    config: Arc<ClientConfig>,
    /// None over a unix socket.
    name: Option<ServerName<'static>>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = ConnectRustls;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(
        &mut self,
        domain: &str,
    ) -> std::result::Result<ConnectRustls, Self::Error> {
        // A unix socket has no name (""): the server declines TLS there, so
        // the handshake never starts; refusing here would fail `prefer`.
        let name = match domain {
            "" => None,
            _ => Some(ServerName::try_from(domain.to_string())?),
        };
        Ok(ConnectRustls {
            config: self.0.clone(),
            name,
        })
    }
}

impl<S> TlsConnect<S> for ConnectRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "TLS without a host name")
            })?;
            connector.connect(name, stream).await.map(RustlsStream)
        })
    }
}

/// An established TLS stream, with its channel binding.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert))
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its
/// signature's hash (SHA-256 for MD5 and SHA-1); none for other algorithms
/// (RSA-PSS, EdDSA), as postgres-openssl.
fn server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = signature_oid(cert)?;
    let hash = match oid.split_last()? {
        (4 | 5, prefix) if prefix == RSA => 256, // md5, sha1WithRSAEncryption
        (11, prefix) if prefix == RSA => 256,
        (12, prefix) if prefix == RSA => 384,
        (13, prefix) if prefix == RSA => 512,
        (14, prefix) if prefix == RSA => 224,
        _ if oid == ECDSA_SHA1 => 256,
        (1, prefix) if prefix == ECDSA_SHA2 => 224,
        (2, prefix) if prefix == ECDSA_SHA2 => 256,
        (3, prefix) if prefix == ECDSA_SHA2 => 384,
        (4, prefix) if prefix == ECDSA_SHA2 => 512,
        _ => return None,
    };
    let der = cert.as_ref();
    Some(match hash {
        224 => sha2::Sha224::digest(der).to_vec(),
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// The OID of a certificate's `signatureAlgorithm` (RFC 5280: Certificate ::=
/// SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }):
/// three DER headers to read, which no crate of the tree exposes.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(cert, 0x30)?;
    let (_tbs, rest) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    Some(oid)
}

/// One DER element of the expected tag at the start of `input`: its content
/// and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's outer structure with the given signature OID (the
    /// contents of tbsCertificate and the signature do not matter here).
    fn cert_with(oid: &[u8], tbs_len: usize) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        alg.extend_from_slice(&[0x05, 0x00]);
        let mut body = vec![0x30, 0x82, (tbs_len >> 8) as u8, tbs_len as u8];
        body.extend(std::iter::repeat_n(0u8, tbs_len));
        body.push(0x30);
        body.push(alg.len() as u8);
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xff]);
        let mut cert = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    /// A self-signed certificate (CA:TRUE, as `openssl req -x509` makes them)
    /// for `name`, as PEM in `dir/file` (openssl CLI, as tests/pg_backend.rs).
    fn self_signed(dir: &std::path::Path, file: &str, name: &str) -> String {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-keyout", "/dev/null", "-out", file])
            .args(["-subj", &format!("/CN={name}")])
            .args(["-addext", &format!("subjectAltName=DNS:{name}")])
            .current_dir(dir)
            .output()
            .expect("openssl (package openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join(file).display().to_string()
    }

    #[test]
    fn a_self_signed_server_certificate_can_be_its_own_root() {
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path(), "server.pem", "db.example");
        let other = self_signed(dir.path(), "other.pem", "db.example");
        let der = |file: &str| CertificateDer::from_pem_file(file).unwrap();
        let checker = |root: &str, check_name| {
            let (roots, pinned) = trusted(Some(root)).unwrap();
            Checked {
                roots,
                pinned,
                check_name,
                #[allow(deprecated)]
                provider: Arc::new(rustls::crypto::ring::default_provider()),
            }
        };
        let verify = |c: &Checked, cert: &CertificateDer<'_>, name: &str| {
            let name = ServerName::try_from(name.to_string()).unwrap();
            c.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        };
        let server = der(&pem);
        // verify-ca: the listed certificate, whatever the name.
        assert!(verify(&checker(&pem, false), &server, "10.0.0.1").is_ok());
        // verify-full: the name must be in it too.
        assert!(verify(&checker(&pem, true), &server, "db.example").is_ok());
        assert!(verify(&checker(&pem, true), &server, "other.example").is_err());
        // Another certificate with the same name is not trusted.
        assert!(verify(&checker(&other, false), &server, "db.example").is_err());
        assert!(verify(&checker(&other, true), &server, "db.example").is_err());
        // A file without a certificate is a configuration error.
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        assert!(trusted(Some(&dir.path().join("empty.pem").display().to_string())).is_err());
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let rsa = |last: u8| {
            let mut oid = vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
            oid.push(last);
            oid
        };
        let len = |oid: &[u8]| {
            server_end_point(&CertificateDer::from(cert_with(oid, 300))).map(|h| h.len())
        };
        assert_eq!(len(&rsa(11)), Some(32), "sha256WithRSAEncryption");
        assert_eq!(len(&rsa(5)), Some(32), "sha1 is hashed with SHA-256");
        assert_eq!(len(&rsa(12)), Some(48));
        assert_eq!(len(&rsa(13)), Some(64));
        assert_eq!(
            len(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]),
            Some(48)
        );
        assert_eq!(len(&rsa(10)), None, "RSA-PSS: no binding");
        assert_eq!(len(&[0x2b, 0x65, 0x70]), None, "Ed25519: no binding");
        let cert = cert_with(&rsa(11), 300);
        assert_eq!(
            server_end_point(&CertificateDer::from(cert.clone())).unwrap(),
            sha2::Sha256::digest(&cert).to_vec()
        );
        // Truncated or not DER: no binding rather than a panic.
        for cut in [0, 1, 3, 10, cert.len() - 1] {
            assert!(signature_oid(&cert[..cut]).is_none(), "cut at {cut}");
        }
        assert!(signature_oid(b"not a certificate").is_none());
    }
}

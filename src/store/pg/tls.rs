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
//! self-signed certificate can be its own root, as with libpq; within its
//! validity dates, which webpki checks only on the way to a root.
//!
//! Channel binding (`tls-server-end-point`, RFC 5929) is offered as
//! postgres-openssl did, so SCRAM-SHA-256-PLUS is used where the server has it.

use super::{Target, Verify};
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::Digest;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use x509_cert::der::Decode;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

/// The connector for a target's `sslmode` and `sslrootcert`.
pub(super) fn connector(target: &Target) -> Result<MakeRustls> {
    // Deprecated for lacking post-quantum key exchange; what OpenSSL 3.0
    // (Debian 12) offered PostgreSQL before had none either, and aws-lc-rs
    // (the provider that has it) would put a second C crypto library into
    // every process that loads the plugin.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match target.verify {
        Verify::None => Arc::new(Verifier {
            provider: provider.clone(),
            checks: None,
        }),
        Verify::Chain | Verify::Full => {
            let (roots, pinned) = trusted(target.root_cert.as_deref())?;
            Arc::new(Verifier::checked(
                provider.clone(),
                roots,
                pinned,
                target.verify == Verify::Full,
            ))
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

/// The server's certificate as `sslmode` asks: with no [`Checks`]
/// (`prefer`/`require`) any certificate, and always a handshake signed by
/// its key.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    checks: Option<Checks>,
}

/// `verify-ca` and `verify-full`: the chain to a trusted CA (or the
/// certificate itself listed in `sslrootcert`), and for `verify-full` the host
/// name (in subjectAltName: webpki reads no common name).
#[derive(Debug)]
struct Checks {
    roots: Arc<RootCertStore>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl Verifier {
    fn checked(
        provider: Arc<CryptoProvider>,
        roots: Arc<RootCertStore>,
        pinned: Vec<CertificateDer<'static>>,
        check_name: bool,
    ) -> Verifier {
        Verifier {
            provider,
            checks: Some(Checks {
                roots,
                pinned,
                check_name,
            }),
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(checks) = &self.checks else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        // The server's self-signed certificate given as sslrootcert is
        // trusted as is (webpki refuses a CA certificate as a leaf), but only
        // within its dates.
        if checks
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            check_dates(end_entity, now)?;
        } else {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &checks.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if checks.check_name {
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

/// A pinned certificate's notBefore and notAfter against `now`, both ends
/// included (RFC 5280 4.1.2.5); one that does not parse is refused.
fn check_dates(
    end_entity: &CertificateDer<'_>,
    now: UnixTime,
) -> std::result::Result<(), rustls::Error> {
    let cert = Certificate::from_der(end_entity.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = cert.tbs_certificate().validity();
    let not_before = UnixTime::since_unix_epoch(validity.not_before.to_unix_duration());
    let not_after = UnixTime::since_unix_epoch(validity.not_after.to_unix_duration());
    let error = if now.as_secs() < not_before.as_secs() {
        CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
    } else if now.as_secs() > not_after.as_secs() {
        CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
    } else {
        return Ok(());
    };
    Err(rustls::Error::InvalidCertificate(error))
}

/// Signature algorithms and the SHA-2 size their `tls-server-end-point`
/// binding is hashed with: the signature's own hash, SHA-256 for MD5 and SHA-1.
const END_POINT_HASHES: [(ObjectIdentifier, u16); 11] = [
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.4"), 256), // md5WithRSAEncryption
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5"), 256), // sha1WithRSAEncryption
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"), 256),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12"), 384),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13"), 512),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.14"), 224),
    (ObjectIdentifier::new_unwrap("1.2.840.10045.4.1"), 256), // ecdsa-with-SHA1
    (ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.1"), 224),
    (ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"), 256),
    (ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3"), 384),
    (ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4"), 512),
];

/// RFC 5929 `tls-server-end-point`: the certificate hashed per its signature
/// algorithm (`END_POINT_HASHES`); none for the others (RSA-PSS, EdDSA) or a
/// certificate that does not parse, as postgres-openssl.
fn server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let der = cert.as_ref();
    let algorithm = Certificate::from_der(der).ok()?.signature_algorithm().oid;
    let (_, bits) = END_POINT_HASHES.iter().find(|(oid, _)| *oid == algorithm)?;
    Some(match bits {
        224 => sha2::Sha224::digest(der).to_vec(),
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (CA:TRUE, as `openssl req -x509` makes them)
    /// for `name`, as PEM in `dir/file` (openssl CLI, as tests/pg_backend.rs);
    /// `key` says which key, `sign` how it is signed (a digest, `-sigopt`).
    fn openssl_cert(
        dir: &std::path::Path,
        file: &str,
        name: &str,
        key: &[&str],
        sign: &[&str],
    ) -> String {
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509"])
            .args(key)
            .args(sign)
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

    const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

    fn self_signed(dir: &std::path::Path, file: &str, name: &str) -> String {
        openssl_cert(dir, file, name, P256, &[])
    }

    #[test]
    fn a_self_signed_server_certificate_can_be_its_own_root() {
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path(), "server.pem", "db.example");
        let other = self_signed(dir.path(), "other.pem", "db.example");
        let der = |file: &str| CertificateDer::from_pem_file(file).unwrap();
        let checker = |root: &str, check_name| {
            let (roots, pinned) = trusted(Some(root)).unwrap();
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Verifier::checked(provider, roots, pinned, check_name)
        };
        let verify = |c: &Verifier, cert: &CertificateDer<'_>, name: &str| {
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
    fn a_pinned_certificate_is_trusted_only_within_its_dates() {
        // `openssl req -days 2`: valid from about now for two days; the
        // verifier is asked at other times, as rustls passes it `now`.
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path(), "server.pem", "db.example");
        let server = CertificateDer::from_pem_file(&pem).unwrap();
        let (roots, pinned) = trusted(Some(&pem)).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let checker = Verifier::checked(provider, roots, pinned, true);
        let name = ServerName::try_from("db.example").unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at =
            |t| checker.verify_server_cert(&server, &[], &name, &[], UnixTime::since_unix_epoch(t));
        assert!(at(now + day).is_ok(), "within its dates");
        let expired = at(now + 3 * day).expect_err("expired");
        assert!(expired.to_string().contains("expired"), "{expired}");
        let early = at(now - day).expect_err("not yet valid");
        assert!(early.to_string().contains("not valid yet"), "{early}");
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let rsa_key = dir.path().join("rsa.key").display().to_string();
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "rsa", "-out", &rsa_key])
            .output()
            .expect("openssl (package openssl)");
        assert!(out.status.success());
        let rsa: &[&str] = &["-key", &rsa_key];
        let cert = |file: &str, key: &[&str], sign: &[&str]| {
            let pem = openssl_cert(dir.path(), file, "db.example", key, sign);
            CertificateDer::from_pem_file(pem).unwrap()
        };
        let len = |cert: &CertificateDer<'_>| server_end_point(cert).map(|h| h.len());
        let rsa256 = cert("rsa256.pem", rsa, &["-sha256"]);
        assert_eq!(
            server_end_point(&rsa256).unwrap(),
            sha2::Sha256::digest(rsa256.as_ref()).to_vec(),
            "sha256WithRSAEncryption: the certificate's SHA-256"
        );
        assert_eq!(
            len(&cert("rsa1.pem", rsa, &["-sha1"])),
            Some(32),
            "SHA-1: SHA-256"
        );
        assert_eq!(len(&cert("rsa384.pem", rsa, &["-sha384"])), Some(48));
        assert_eq!(len(&cert("rsa512.pem", rsa, &["-sha512"])), Some(64));
        assert_eq!(len(&cert("ec224.pem", P256, &["-sha224"])), Some(28));
        assert_eq!(len(&cert("ec256.pem", P256, &["-sha256"])), Some(32));
        assert_eq!(len(&cert("ec384.pem", P256, &["-sha384"])), Some(48));
        assert_eq!(len(&cert("ec512.pem", P256, &["-sha512"])), Some(64));
        assert_eq!(
            len(&cert("ec1.pem", P256, &["-sha1"])),
            Some(32),
            "SHA-1: SHA-256"
        );
        let pss = ["-sha256", "-sigopt", "rsa_padding_mode:pss"];
        assert_eq!(
            len(&cert("pss.pem", rsa, &pss)),
            None,
            "RSA-PSS: no binding"
        );
        let ed25519 = cert("ed25519.pem", &["-newkey", "ed25519"], &[]);
        assert_eq!(len(&ed25519), None, "Ed25519: no binding");
        // Truncated or not DER: no binding rather than a panic.
        let der = rsa256.as_ref();
        for cut in [0, 1, 3, 10, der.len() - 1] {
            assert_eq!(
                len(&CertificateDer::from(&der[..cut])),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(len(&CertificateDer::from(&b"not a certificate"[..])), None);
    }
}

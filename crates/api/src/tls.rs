//! Optional TLS for every listener (`--tls-cert PATH --tls-key PATH` on
//! `berth base`, `controller` and `gateway`), and the client side: a CA file
//! (`--ca-file` / `BERTH_CA_FILE`) every berth HTTP client trusts besides the
//! public roots.
//!
//! The server side loads a PEM certificate chain and its private key into a
//! [`ServerTls`] (rustls with the `ring` provider), whose [`ServerTls::accept`]
//! turns an accepted TCP connection into a [`Conn`]; a listener without TLS
//! serves [`Conn::Plain`] the same way. Every load error names the file and
//! the fix.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The environment variable naming a CA file clients trust (`--ca-file`).
pub const CA_FILE_ENV: &str = "BERTH_CA_FILE";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of `--tls-cert` / `--tls-key` without the other.
    #[error(
        "{given} was given without {missing}; TLS needs both (--tls-cert CERT.pem --tls-key KEY.pem), or neither to serve plain HTTP"
    )]
    HalfPair {
        /// The flag given.
        given: &'static str,
        /// The flag missing.
        missing: &'static str,
    },
    /// A file cannot be read.
    #[error("cannot read the {what} {}: {source}; check the path and that this user may read it", .path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A certificate file with no certificate in it.
    #[error(
        "the {what} {} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block); pass a PEM certificate file{}",
        .path.display(),
        if *.what == "TLS certificate file" { ", the server's certificate first" } else { "" }
    )]
    NoCertificate {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file that is not valid PEM.
    #[error("the {what} {} is not valid PEM ({why}); pass a PEM file as openssl writes it", .path.display())]
    BadPem {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
    /// A key file with no private key in it.
    #[error(
        "the TLS key file {} holds no private key (a -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY block); pass the unencrypted PEM key of the certificate",
        .path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A key rustls cannot use.
    #[error(
        "the TLS key file {} is not a usable private key ({why}); pass an unencrypted PKCS#8, PKCS#1 or SEC1 PEM key (RSA, ECDSA P-256/P-384 or Ed25519)",
        .path.display()
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A key that is not the certificate's.
    #[error(
        "the TLS key file {} does not match the certificate in {}; pass the key the certificate was issued for",
        .key.display(), .cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Any other refusal of rustls.
    #[error("cannot serve TLS with {} and {}: {why}", .cert.display(), .key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        why: String,
    },
}

/// A listener's TLS: the certificate and key it presents.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    cert: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// TLS from the `--tls-cert` / `--tls-key` flags: both, or neither
    /// (`None`, plain HTTP).
    pub fn from_flags(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
            (Some(_), None) => Err(TlsError::HalfPair {
                given: "--tls-cert",
                missing: "--tls-key",
            }),
            (None, Some(_)) => Err(TlsError::HalfPair {
                given: "--tls-key",
                missing: "--tls-cert",
            }),
        }
    }

    /// Loads the PEM certificate chain in `cert` (server certificate
    /// first) and the PEM private key in `key`, and checks they match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates("TLS certificate file", cert)?;
        let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
            what: "TLS key file",
            path: key.into(),
            source,
        })?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: key.into() },
            other => TlsError::BadKey {
                path: key.into(),
                why: other.to_string(),
            },
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config {
                cert: cert.into(),
                key: key.into(),
                why: e.to_string(),
            })?
            .with_no_client_auth();
        let mut config = builder
            .with_single_cert(chain, private)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                    cert: cert.into(),
                    key: key.into(),
                },
                rustls::Error::General(why) => TlsError::BadKey {
                    path: key.into(),
                    why,
                },
                other => TlsError::Config {
                    cert: cert.into(),
                    key: key.into(),
                    why: other.to_string(),
                },
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert: cert.into(),
        })
    }

    /// The certificate file it presents.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Runs the TLS handshake on an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Conn> {
        let tls = self.acceptor.accept(stream).await?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

/// `https` when `tls` is on, else `http`: for startup lines and advertised URLs.
pub fn scheme(tls: Option<&ServerTls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// An accepted connection, over TLS or not.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The connection `stream` becomes on a listener with `tls` (the
    /// handshake, when there is TLS).
    pub async fn accept(tls: Option<&ServerTls>, stream: TcpStream) -> io::Result<Self> {
        match tls {
            Some(tls) => tls.accept(stream).await,
            None => Ok(Conn::Plain(stream)),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The certificates of the PEM file `path`, at least one.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.into(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what,
            path: path.into(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.into(),
        });
    }
    Ok(chain)
}

/// The CA certificates every client of this process trusts besides the
/// public roots ([`trust_ca_file`]).
static TRUSTED_CA: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();

/// Makes every berth HTTP client of this process ([`with_trusted_ca`])
/// trust the CA certificates in the PEM file `path` (`--ca-file`,
/// `BERTH_CA_FILE`): how a client reaches a listener whose certificate a
/// private CA signed, or a self-signed one. The first call wins.
pub fn trust_ca_file(path: &Path) -> Result<(), TlsError> {
    let ders = read_certificates("CA file", path)?;
    let mut roots = Vec::with_capacity(ders.len());
    for der in ders {
        roots.push(
            reqwest::Certificate::from_der(der.as_ref()).map_err(|e| TlsError::BadPem {
                what: "CA file",
                path: path.into(),
                why: e.to_string(),
            })?,
        );
    }
    let _ = TRUSTED_CA.set(roots);
    Ok(())
}

/// `builder`, trusting the CA file given to [`trust_ca_file`] (if any).
pub fn with_trusted_ca(mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    for root in TRUSTED_CA.get().into_iter().flatten() {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
}

/// When `error` (a failed request) is a server certificate this process
/// does not trust, what to do about it.
pub fn untrusted_hint(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(why)) = rustls_error(e) {
            let why = format!("{why:?}");
            if why.contains("CaUsedAsEndEntity") {
                return Some(format!(
                    "the server's TLS certificate is a CA certificate (basicConstraints CA:TRUE), \
                     which TLS clients refuse as a server's own; serve a certificate made with \
                     basicConstraints=CA:FALSE (or one the CA signed) and pass the CA with \
                     --ca-file PATH or {CA_FILE_ENV}=PATH"
                ));
            }
            return Some(format!(
                "the server's TLS certificate is not trusted ({why}); pass the CA that signed it \
                 (or the self-signed certificate) with --ca-file PATH or {CA_FILE_ENV}=PATH"
            ));
        }
        cause = e.source();
    }
    None
}

/// The rustls error `e` is, or wraps in (nested) I/O errors.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e = e;
    loop {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        e = e.downcast_ref::<io::Error>()?.get_ref()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_pair_and_missing_files_say_what_to_pass() {
        let err = ServerTls::from_flags(Some(Path::new("c.pem")), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("--tls-cert was given without --tls-key"),
            "{err}"
        );
        assert!(ServerTls::from_flags(None, None).unwrap().is_none());
        let err = ServerTls::load(Path::new("/nonexistent/c.pem"), Path::new("k.pem")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("TLS certificate file /nonexistent/c.pem"),
            "{text}"
        );
        assert!(text.contains("check the path"), "{text}");
    }

    #[test]
    fn a_file_without_a_certificate_or_key_is_named() {
        let dir = std::env::temp_dir().join(format!("berth-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let err = ServerTls::load(&empty, &empty).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        assert!(err.contains("empty.pem"), "{err}");
        let err = trust_ca_file(&empty).unwrap_err().to_string();
        assert!(err.contains("CA file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

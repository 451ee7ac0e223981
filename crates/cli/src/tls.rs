//! TLS on the CLI side: the `--tls-cert` / `--tls-key` flags of `berth
//! base`, `controller` and `gateway`, and the CA file every client command
//! trusts (`--ca-file`, `BERTH_CA_FILE`; [`berth_api::tls`]).

use std::path::PathBuf;

use anyhow::Result;
use berth_api::tls::ServerTls;

/// The TLS flags of a server command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerTlsArgs {
    /// Serve HTTPS with this PEM certificate chain (server certificate
    /// first); needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The TLS these flags ask for (`None`: plain HTTP), loaded and checked.
    pub fn load(&self) -> Result<Option<ServerTls>> {
        Ok(ServerTls::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?)
    }
}

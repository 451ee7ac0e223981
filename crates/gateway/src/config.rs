//! Settings of a gateway, and why one did not start.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a [`Gateway`](crate::Gateway).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where clients connect (port 0: any free port).
    pub listen: SocketAddr,
    /// The controller API(s), each `http(s)://host:port`; tried in turn.
    pub controllers: Vec<String>,
    /// This gateway's name in load reports (empty: `gateway-<port>`).
    pub name: String,
    /// The secret bases trust a gateway by (`berth base --gateway-secret`);
    /// without it the gateway pins no version.
    pub secret: Option<String>,
    /// How often the load report goes to the controller.
    pub report_interval: Duration,
    /// Largest request body forwarded (it is buffered, so that a request
    /// can be retried on another replica).
    pub max_body_bytes: usize,
    /// How long a replica is first ejected for after a failure; each
    /// ejection in a row doubles it, up to [`GatewayConfig::max_ejection`].
    pub ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// Requests held per deployment while it has no ready replica (scale
    /// from zero); more are answered 503.
    pub hold_queue: usize,
    /// How long a held request waits for a ready replica before a 503.
    pub hold_timeout: Duration,
    /// The token sent to the controller (`--join-token`: its `fleet`
    /// scope covers the endpoint table, load reports and activation);
    /// `None`: none is sent.
    pub token: Option<String>,
    /// TLS clients connect over (`--tls-cert`/`--tls-key`); `None`: plain HTTP.
    pub tls: Option<berth_api::tls::ServerTls>,
}

impl GatewayConfig {
    /// A gateway on `listen` for the controllers in `controllers`
    /// (comma-separated; `http://` is added to an address without a scheme).
    pub fn new(controllers: &str, listen: SocketAddr) -> Result<Self, GatewayError> {
        let controllers: Vec<String> = controllers
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                let url = if c.contains("://") {
                    c.to_string()
                } else {
                    format!("http://{c}")
                };
                url.trim_end_matches('/').to_string()
            })
            .collect();
        if controllers.is_empty() {
            return Err(GatewayError::NoController);
        }
        Ok(Self {
            listen,
            controllers,
            name: String::new(),
            secret: None,
            report_interval: Duration::from_secs(1),
            max_body_bytes: 16 << 20,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            hold_queue: 1000,
            hold_timeout: Duration::from_secs(10),
            token: None,
            tls: None,
        })
    }
}

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `--controller` named nothing.
    #[error(
        "--controller names no controller; give one or more, e.g. --controller http://127.0.0.1:1239"
    )]
    NoController,
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another gateway running there?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_are_split_and_given_a_scheme() {
        let config = GatewayConfig::new(
            "127.0.0.1:1239, https://ctl.example/ ",
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.controllers,
            ["http://127.0.0.1:1239", "https://ctl.example"]
        );
        let err = GatewayConfig::new(" , ", "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("--controller http://"), "{err}");
    }
}

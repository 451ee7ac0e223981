//! Settings of a gateway, and why one did not start.

use std::net::SocketAddr;
use std::time::Duration;

/// How often a gateway reports load by default: a step in the traffic
/// reaches the autoscaler within one or two reports (the first covers
/// only part of its interval), so this bounds how fast replicas follow
/// it. 250 ms keeps a step's decision well under a second (`berth
/// gateway` reported each second before, which alone took up to 2 s; see
/// bench/README.md, "Autoscale"), and costs the controller 4 small
/// requests per second per gateway.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// The shortest report interval: below it the reports would cost the
/// controller more than they tell it (and a rate over a few milliseconds
/// is mostly noise).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// The longest report interval: the controller forgets a gateway's
/// report after 5 s, so a longer interval would make its load vanish
/// between reports (and a deployment look idle).
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(4);

/// Checks a load report interval (`--load-report-interval`): within
/// [`MIN_REPORT_INTERVAL`] and [`MAX_REPORT_INTERVAL`].
pub fn check_report_interval(interval: Duration) -> Result<(), GatewayError> {
    if (MIN_REPORT_INTERVAL..=MAX_REPORT_INTERVAL).contains(&interval) {
        Ok(())
    } else {
        Err(GatewayError::ReportInterval(interval))
    }
}

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
    /// How often the load report goes to the controller
    /// ([`DEFAULT_REPORT_INTERVAL`]; within [`MIN_REPORT_INTERVAL`] and
    /// [`MAX_REPORT_INTERVAL`], see [`check_report_interval`]).
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
    /// Listener threads (`--threads`), each with its own single-threaded
    /// runtime, its own client connections (a new one goes to the thread
    /// with the fewest open) and its own connections to the bases, so a request never leaves the thread
    /// that accepted it. 0: connections are served on the caller's
    /// (work-stealing) runtime. See `crate::server` for why.
    pub threads: usize,
    /// The HTTP version requests go to bases in (`--base-protocol`).
    pub base_protocol: BaseProtocol,
}

/// The HTTP version a gateway speaks to bases.
///
/// HTTP/2 (cleartext, prior knowledge) is the default: each listener
/// thread keeps one connection per base and sends every request to that
/// base on it as a stream. The requests in flight to a base then share
/// reads and writes: one `writev` carries the frames of several requests
/// and one read brings back several responses, where HTTP/1 costs two
/// system calls per request on each side and a wake-up for each. On a
/// 2-core machine that took 5–17% off the gateway's CPU per request
/// (bench/README.md, "The gateway speaks HTTP/2 to bases"). HTTP/1 (a
/// pool of keep-alive connections, one request at a time on each) is
/// there for a base that does not speak HTTP/2; every berth base does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BaseProtocol {
    /// HTTP/2 over cleartext TCP (h2c, prior knowledge), requests
    /// multiplexed on one connection per listener thread and base.
    #[default]
    Http2,
    /// HTTP/1.1 keep-alive connections, pooled.
    Http1,
}

impl std::str::FromStr for BaseProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http2" | "h2" | "h2c" => Ok(Self::Http2),
            "http1" | "http1.1" | "h1" => Ok(Self::Http1),
            _ => Err(format!(
                "`{text}` is not a protocol a gateway speaks to bases; give http2 or http1"
            )),
        }
    }
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
            report_interval: DEFAULT_REPORT_INTERVAL,
            max_body_bytes: 16 << 20,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            hold_queue: 1000,
            hold_timeout: Duration::from_secs(10),
            token: None,
            tls: None,
            threads: 0,
            base_protocol: BaseProtocol::default(),
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
    /// A load report interval outside its bounds (zero included).
    #[error(
        "--load-report-interval {} is out of range: give a duration from 10ms to 4s, e.g. 250ms (the default); shorter floods the controller with reports, longer outlives the 5 s the controller keeps a report",
        humantime::format_duration(*.0)
    )]
    ReportInterval(Duration),
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
        assert_eq!(config.report_interval, DEFAULT_REPORT_INTERVAL);
    }

    #[test]
    fn a_report_interval_out_of_bounds_is_refused_with_the_range() {
        for ok in ["10ms", "250ms", "1s", "4s"] {
            let d = humantime::parse_duration(ok).unwrap();
            assert!(check_report_interval(d).is_ok(), "{ok}");
        }
        for (bad, shown) in [
            ("0s", "0s"),
            ("9ms", "9ms"),
            ("4s 1ms", "4s 1ms"),
            ("1m", "1m"),
        ] {
            let err = check_report_interval(humantime::parse_duration(bad).unwrap()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("--load-report-interval {shown} is out of range"))
                    && text.contains("from 10ms to 4s, e.g. 250ms"),
                "{text}"
            );
        }
    }
}

//! Version pins from a fleet gateway: honoured only with the base's
//! gateway secret, ignored from anyone else, and never seen by a module.

use berth_api::InstallRequest;
use berth_api::endpoints::{GATEWAY_SECRET_HEADER, PIN_VERSION_HEADER};
use berth_example_modules::{ECHO, HELLO, HELLO_V2};

use crate::support::{TestBase, install_request};

/// A base trusting gateways with `secret`, with hello@1 (default) and
/// hello@2 installed, and echo.
async fn base(secret: Option<&str>) -> TestBase {
    let base = TestBase::start_with(|c| c.gateway_secret = secret.map(str::to_string)).await;
    base.install_path("hello", "1", HELLO).await;
    let (status, body) = base
        .install(&InstallRequest {
            activate: Some(false),
            ..install_request("hello", "2", HELLO_V2)
        })
        .await;
    assert_eq!(status, 201, "{body}");
    base.install_path("echo", "1", ECHO).await;
    base
}

/// The version of hello serving a request with `pin` and `secret` headers.
async fn served_by(base: &TestBase, pin: Option<&str>, secret: Option<&str>) -> String {
    let mut request = base.client.get(base.url("/hello"));
    if let Some(pin) = pin {
        request = request.header(PIN_VERSION_HEADER, pin);
    }
    if let Some(secret) = secret {
        request = request.header(GATEWAY_SECRET_HEADER, secret);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-berth-module"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_version_pin_is_honoured_only_from_a_gateway_with_the_secret() {
    let base = base(Some("s3cret")).await;
    assert_eq!(served_by(&base, None, None).await, "hello@1");
    assert_eq!(served_by(&base, Some("2"), Some("s3cret")).await, "hello@2");
    // Untrusted: no secret, a wrong one, or one of another length.
    assert_eq!(served_by(&base, Some("2"), None).await, "hello@1");
    assert_eq!(served_by(&base, Some("2"), Some("s3creT")).await, "hello@1");
    assert_eq!(served_by(&base, Some("2"), Some("s3")).await, "hello@1");
    // A pin to a version this base does not run: its own rules decide.
    assert_eq!(served_by(&base, Some("9"), Some("s3cret")).await, "hello@1");

    // The module never sees the secret or the pin.
    let body = base
        .client
        .get(base.url("/echo"))
        .header(PIN_VERSION_HEADER, "1")
        .header(GATEWAY_SECRET_HEADER, "s3cret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains("s3cret") && !body.contains(PIN_VERSION_HEADER),
        "{body}"
    );

    // A base without a secret trusts no one.
    let open = self::base(None).await;
    assert_eq!(served_by(&open, Some("2"), Some("")).await, "hello@1");
    assert_eq!(served_by(&open, Some("2"), Some("s3cret")).await, "hello@1");
}

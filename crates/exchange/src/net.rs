//! Connections to venues: one HTTP client and WebSockets, over rustls with its pure-Rust
//! `ring` provider (the default `aws-lc-rs` needs cmake to build).
//!
//! Errors say which endpoint failed and why, never what was sent: a request may carry a key.

use std::sync::{Arc, Once};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use crate::ExchangeError;

/// Makes `ring` rustls' process-wide provider, once; reqwest's `rustls-no-provider` needs it.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first: that one serves too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client whose every request gives up after `timeout`.
///
/// # Errors
/// When the TLS set-up fails (no usable crypto provider).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ExchangeError> {
    install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("crypy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ExchangeError::Connectivity(format!("cannot set up the HTTP client: {e}")))
}

/// A byte stream a WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client WebSocket, over TCP (`ws://`) or TLS (`wss://`).
pub type WsStream = WebSocketStream<Box<dyn Io>>;

/// Opens a WebSocket to `url` (`ws://` or `wss://`), giving up after `timeout`.
///
/// # Errors
/// A malformed URL, or an endpoint that cannot be reached or refuses the handshake.
pub async fn ws_connect(url: &str, timeout: Duration) -> Result<WsStream, ExchangeError> {
    let fail = |what: String| ExchangeError::Connectivity(format!("websocket {}: {what}", redact_query(url)));
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
    let tls = match parsed.scheme() {
        "wss" => true,
        "ws" => false,
        other => return Err(fail(format!("scheme {other} is not ws or wss"))),
    };
    let host = parsed.host_str().ok_or_else(|| fail("no host".into()))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let connect = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| fail(format!("connect: {e}")))?;
        // Order messages are small and latency matters more than packet count.
        tcp.set_nodelay(true).map_err(|e| fail(format!("socket: {e}")))?;
        let stream: Box<dyn Io> = if tls {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| fail(format!("TLS set-up: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("TLS name {host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (ws, _) =
            tokio_tungstenite::client_async(url, stream).await.map_err(|e| fail(format!("handshake: {e}")))?;
        Ok(ws)
    };
    tokio::time::timeout(timeout, connect).await.map_err(|_| fail(format!("no answer in {timeout:?}")))?
}

/// `url` without its query, which may carry a token.
pub fn redact_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_client_builds_without_aws_lc() {
        http_client(Duration::from_secs(1)).unwrap();
    }

    #[tokio::test]
    async fn websocket_errors_name_the_endpoint_not_its_query() {
        let err = ws_connect("ftp://example.invalid/x?token=SECRET", Duration::from_secs(1)).await.err().unwrap();
        let text = err.to_string();
        assert!(text.contains("ftp://example.invalid/x") && text.contains("not ws or wss"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        // A closed port on loopback: refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = ws_connect(&format!("ws://127.0.0.1:{port}/v2"), Duration::from_secs(1)).await.err().unwrap();
        assert!(err.is_retryable() && err.to_string().contains("connect"), "{err}");
    }
}

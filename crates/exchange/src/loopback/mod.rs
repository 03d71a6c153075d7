//! Loopback servers for tests: a plain HTTP/1.1 server and a WebSocket server on 127.0.0.1,
//! each on its own thread and runtime, so that a synchronous test (one driving the `crypy`
//! binary) and an async one can both start them. The venue-specific fakes (signature and
//! nonce checks, recorded bodies, injected faults) are built on these.
//!
//! Only compiled with the `loopback` feature; nothing in a desk may use it.

/// A fake BitMEX venue (REST and realtime WebSocket) for tests.
pub mod bitmex;
/// A fake Kraken spot venue (REST and WebSocket v2) for tests.
pub mod kraken;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::WebSocketStream;

/// A failure a fake venue injects into the next request on a path, as the real venue fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with the venue's rate-limit error (and its headers); nothing done.
    TooManyRequests,
    /// HTTP 503 with the venue's overload error; nothing done.
    ServerError,
    /// The request IS carried out, and answered after the client gave up.
    Timeout,
    /// The connection closes without an answer; nothing done.
    HangUp,
}

/// One HTTP request as the server read it.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, as sent (`/api/v1/order?symbol=XBTUSD`).
    pub target: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// An HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// A JSON body with `status`.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        HttpResponse { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the server does with a request: answer, answer late, or hang up without a word.
#[derive(Clone, Debug)]
pub enum Reply {
    Respond(HttpResponse),
    /// Answer after a delay (longer than the client's timeout: a timeout).
    Late(Duration, HttpResponse),
    /// Close the connection without answering.
    HangUp,
}

type HttpHandler = dyn Fn(HttpRequest) -> Reply + Send + Sync;

/// A loopback HTTP/1.1 server (keep-alive, `Content-Length` bodies); stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HttpServer {
    /// Starts a server on a free port, answering every request with `handler`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(handler: impl Fn(HttpRequest) -> Reply + Send + Sync + 'static) -> std::io::Result<HttpServer> {
        let handler: Arc<HttpHandler> = Arc::new(handler);
        let (addr, stop) = serve(move |stream| {
            let handler = handler.clone();
            Box::pin(async move {
                let _ = http_connection(stream, handler).await;
            })
        })?;
        Ok(HttpServer { addr, stop: Some(stop) })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn http_connection(stream: TcpStream, handler: Arc<HttpHandler>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return Ok(()) };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body).await?;
        let request = HttpRequest { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() };
        let response = match handler(request) {
            Reply::Respond(r) => r,
            Reply::Late(delay, r) => {
                tokio::time::sleep(delay).await;
                r
            }
            Reply::HangUp => return Ok(()),
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", response.body.len()));
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(response.body.as_bytes()).await?;
        stream.flush().await?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A server-side WebSocket.
pub type ServerWs = WebSocketStream<TcpStream>;

type WsHandler = dyn Fn(ServerWs, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// A loopback WebSocket server; each connection runs `handler(socket, path)` on its own task.
/// Stops when dropped (open connections end with it).
#[derive(Debug)]
pub struct WsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WsServer {
    /// Starts a server on a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start<F>(handler: impl Fn(ServerWs, String) -> F + Send + Sync + 'static) -> std::io::Result<WsServer>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handler: Arc<WsHandler> = Arc::new(move |ws, path| Box::pin(handler(ws, path)));
        let (addr, stop) = serve(move |stream| {
            let handler = handler.clone();
            Box::pin(async move {
                let mut path = String::new();
                // tungstenite's callback signature fixes the error type.
                #[allow(clippy::result_large_err)]
                let record_path = |request: &Request, response: Response| {
                    path = request.uri().to_string();
                    Ok(response)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, record_path).await {
                    handler(ws, path).await;
                }
            })
        })?;
        Ok(WsServer { addr, stop: Some(stop) })
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accepts connections on a free loopback port, on a thread of its own, until told to stop.
fn serve(
    on_connection: impl Fn(TcpStream) -> Connection + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name(format!("loopback-{}", addr.port())).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            let accept = async {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(on_connection(stream));
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stopped => {}
            }
        });
    })?;
    Ok((addr, stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    #[tokio::test]
    async fn http_requests_reach_the_handler_and_faults_happen() {
        let server = HttpServer::start(|r| match r.path() {
            "/echo" => Reply::Respond(HttpResponse::json(200, format!("{}|{}|{:?}", r.method, r.body, r.query()))),
            "/slow" => Reply::Late(Duration::from_secs(5), HttpResponse::json(200, "{}")),
            "/busy" => Reply::Respond(HttpResponse::json(429, "{}").with_header("retry-after", "1")),
            _ => Reply::HangUp,
        })
        .unwrap();
        let client = crate::net::http_client(Duration::from_millis(300)).unwrap();
        let body =
            client.post(format!("{}/echo?a=1", server.url())).body("x=2").send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "POST|x=2|Some(\"a=1\")");
        let busy = client.get(format!("{}/busy", server.url())).send().await.unwrap();
        assert_eq!((busy.status().as_u16(), busy.headers()["retry-after"].to_str().unwrap()), (429, "1"));
        assert!(client.get(format!("{}/slow", server.url())).send().await.unwrap_err().is_timeout());
        assert!(client.get(format!("{}/gone", server.url())).send().await.is_err());
    }

    #[tokio::test]
    async fn websockets_echo_with_their_path() {
        let server = WsServer::start(|mut ws, path| async move {
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let _ = ws.send(Message::text(format!("{path}:{t}"))).await;
            }
        })
        .unwrap();
        let mut ws = crate::net::ws_connect(&format!("{}/v2", server.url()), Duration::from_secs(2)).await.unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("no echo") };
        assert_eq!(t.as_str(), "/v2:hi");
    }
}

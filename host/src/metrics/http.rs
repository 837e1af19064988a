//! A minimal HTTP/1.1 responder for `GET /metrics` and `GET /health`, on a
//! thread of its own. Scrapes are rare and small, so one connection is
//! served at a time, each bounded by a short timeout, and then closed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{Metrics, encode};

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Request lines and headers longer than this are not ours to serve.
const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--metrics-addr): {source}")]
pub struct BindError {
    addr: String,
    source: std::io::Error,
}

/// Listen on `addr` and serve `metrics` until the process exits. Returns
/// the bound address (useful with port 0).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<SocketAddr, BindError> {
    let failed = |source| BindError {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &metrics) {
                            tracing::debug!("metrics endpoint: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("metrics endpoint: accept: {e}"),
                }
            }
        })
        .map_err(failed)?;
    tracing::info!(addr = %bound, "serving /metrics and /health");
    Ok(bound)
}

/// What to send back.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers are read (and ignored) so the client sees a clean close.
    let mut read = request_line.len();
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header)?;
        read += n;
        if n == 0 || header == "\r\n" || header == "\n" || read > MAX_HEADER_BYTES {
            break;
        }
    }
    let response = route(&request_line, metrics);
    let mut stream = &stream;
    write!(
        stream,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    )?;
    stream.flush()
}

fn route(request_line: &str, metrics: &Metrics) -> Response {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // Query strings (e.g. from probes adding a cache buster) do not matter.
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return text("405 Method Not Allowed", "only GET is served\n".into());
    }
    match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: encode::CONTENT_TYPE,
            body: encode::render(metrics),
        },
        "/health" => {
            let report = metrics.health.report();
            if report.ready {
                text("200 OK", "ok\n".into())
            } else {
                let mut body = report.reasons.join("\n");
                body.push('\n');
                text("503 Service Unavailable", body)
            }
        }
        _ => text(
            "404 Not Found",
            "not found: try /metrics or /health\n".into(),
        ),
    }
}

fn text(status: &'static str, body: String) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_metrics_health_and_404() {
        let metrics = Arc::new(Metrics::default());
        let addr = serve("127.0.0.1:0", metrics.clone()).unwrap();
        let answer = get(addr, "/metrics");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("# TYPE logpipe_records_handled_total counter"));
        let answer = get(addr, "/health");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with("no consumer started yet\n"), "{answer}");
        metrics.health.component("kafka").ok("assigned");
        let answer = get(addr, "/health?x=1");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error = serve(&addr, Arc::new(Metrics::default())).unwrap_err();
        assert!(error.to_string().contains("--metrics-addr"), "{error}");
    }
}

//! Test helpers shared by the adapters' and the pool's tests: loopback servers that speak raw
//! HTTP/1.1, and raw responses for them.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A loopback server that runs `serve` on every connection it accepts, and the count of those.
pub(crate) async fn counting_listener<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(sock));
        }
    });
    (addr, accepted)
}

pub(crate) async fn one_shot_server(response: String) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let request = read_request(&mut sock).await.unwrap_or_default();
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        request
    });
    (format!("http://{addr}/v1"), handle)
}

/// A keep-alive upstream that answers every request with a chunked SSE body of `events` (each a
/// whole event: `data: …\n\n`), and the count of connections it accepted. The body's last, empty
/// chunk comes with the last event, or `last_chunk_after` later.
pub(crate) async fn chunked_sse_server(
    events: Vec<String>,
    last_chunk_after: Option<std::time::Duration>,
) -> (String, Arc<AtomicUsize>) {
    let body: String = events
        .iter()
        .map(|e| format!("{:x}\r\n{e}\r\n", e.len()))
        .collect();
    let (addr, accepted) = counting_listener(move |mut sock| {
        let body = body.clone();
        async move {
            while read_request(&mut sock).await.is_some() {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                match last_chunk_after {
                    None => sock.write_all(format!("{head}{body}0\r\n\r\n").as_bytes()).await.unwrap(),
                    Some(after) => {
                        sock.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
                        tokio::time::sleep(after).await;
                        sock.write_all(b"0\r\n\r\n").await.unwrap();
                    }
                }
            }
        }
    })
    .await;
    (format!("http://{addr}/v1"), accepted)
}

/// Streams from `p` three times as the router reads a stream — up to its finish, then on to its end
/// (`finish_stream`) — and checks the text of each and that all three went over one connection.
pub(crate) async fn streams_share_one_connection(
    p: &dyn super::Provider,
    accepted: &AtomicUsize,
    text: &str,
) {
    use futures::StreamExt;
    let req = crate::types::ChatRequest {
        messages: vec![crate::types::Message::text(crate::types::Role::User, "hey")],
        ..Default::default()
    };
    for _ in 0..3 {
        let mut stream = p
            .stream(&req, "up", &crate::types::RequestMeta::default())
            .await
            .unwrap();
        let mut got = String::new();
        while let Some(item) = stream.next().await {
            match item.unwrap() {
                crate::types::StreamEvent::TextDelta { text } => got.push_str(&text),
                crate::types::StreamEvent::Finish { .. } => break,
                _ => {}
            }
        }
        super::finish_stream(stream).await;
        assert_eq!(got, text);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Reads one request (head and `content-length` body) from `sock`; `None` at end of stream.
pub(crate) async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = sock.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text.into_owned());
            }
        }
    }
}

pub(crate) fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

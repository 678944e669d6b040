//! The load generator: one task per keep-alive HTTP/1 connection (hyper's client connection API),
//! every latency timed with [`Instant`] and recorded in nanoseconds into an HDR histogram.
//!
//! Every loop here is bounded: by a request count, or by a deadline that each request's own
//! timeout also respects.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpStream, task::JoinSet};

/// The longest any one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A new latency histogram: 1 ns to 5 minutes, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 300_000_000_000, 3).context("creating a histogram")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Where to send requests: a base URL such as `http://127.0.0.1:8080`, and the API key if any.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub authority: String,
    pub key: Option<String>,
}

impl Endpoint {
    pub fn new(base_url: &str, key: Option<&str>) -> anyhow::Result<Endpoint> {
        let uri: Uri = base_url
            .parse()
            .with_context(|| format!("{base_url:?} is no URL"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("{base_url:?} has no host:port"))?;
        let addr: SocketAddr = authority
            .as_str()
            .parse()
            .with_context(|| format!("{base_url:?}: the bench talks to IP:PORT addresses only"))?;
        Ok(Endpoint {
            addr,
            authority: authority.as_str().to_owned(),
            key: key.map(str::to_owned),
        })
    }
}

/// The OpenAI chat completions request every system gets.
pub fn chat_body(model: &str, stream: bool) -> Bytes {
    let v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say something short for the gateway benchmark."}],
        "stream": stream,
    });
    Bytes::from(v.to_string())
}

/// One keep-alive HTTP/1 connection, reopened when it breaks.
pub struct Conn {
    ep: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

/// What one streamed answer looked like.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    /// Until the first non-empty content delta.
    pub ttft: Option<Duration>,
    /// Until the end of the body.
    pub total: Duration,
    /// Non-empty content deltas seen.
    pub tokens: u32,
}

impl Conn {
    pub fn new(ep: &Endpoint) -> Conn {
        Conn {
            ep: ep.clone(),
            sender: None,
            driver: None,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.ep.addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {}", self.ep.addr))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        if let Some(d) = self.driver.replace(tokio::spawn(async move {
            let _ = conn.await;
        })) {
            d.abort();
        }
        self.sender = Some(sender);
        Ok(())
    }

    /// Opens the connection now (the first request would otherwise pay for it).
    pub async fn open(&mut self) -> anyhow::Result<()> {
        self.connect().await
    }

    fn request(&self, path: &str, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::post(path)
            .header(header::HOST, self.ep.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(k) = &self.ep.key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        Ok(b.body(Full::new(body))?)
    }

    async fn ready_sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await?;
        }
        self.sender.as_mut().context("no connection")
    }

    async fn call_inner(&mut self, path: &str, body: Bytes) -> anyhow::Result<Bytes> {
        let req = self.request(path, body)?;
        let resp = self.ready_sender().await?.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        Ok(bytes)
    }

    /// POSTs `body` and reads the whole answer; anything but a 200 in time is an error. On an
    /// error the connection is dropped (the next call opens a new one).
    pub async fn call(
        &mut self,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<Bytes> {
        let r = match tokio::time::timeout(timeout, self.call_inner(path, body)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out after {timeout:?}")),
        };
        if r.is_err() {
            self.sender = None;
        }
        r
    }

    async fn stream_inner(
        &mut self,
        path: &str,
        body: Bytes,
        active: Option<&AtomicI64>,
    ) -> anyhow::Result<StreamTiming> {
        let req = self.request(path, body)?;
        let sender = self.ready_sender().await?;
        let t0 = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let bytes = body.collect().await?.to_bytes();
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        let _guard = active.map(ActiveGuard::new);
        let mut scan = TokenScan::default();
        let mut ttft = None;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                // The frame's arrival time, taken before it is scanned: a frame that carries the
                // whole answer must not charge the scan of its other tokens to the first one.
                let arrived = t0.elapsed();
                if scan.feed(&data) > 0 && ttft.is_none() {
                    ttft = Some(arrived);
                }
            }
        }
        Ok(StreamTiming {
            ttft,
            total: t0.elapsed(),
            tokens: scan.tokens,
        })
    }

    /// POSTs a streaming request and reads the event stream to its end, timing the first token.
    /// `active` counts the streams whose headers have arrived and whose body is still open.
    pub async fn stream(
        &mut self,
        path: &str,
        body: Bytes,
        timeout: Duration,
        active: Option<&AtomicI64>,
    ) -> anyhow::Result<StreamTiming> {
        let r = match tokio::time::timeout(timeout, self.stream_inner(path, body, active)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out after {timeout:?}")),
        };
        if r.is_err() {
            self.sender = None;
        }
        r
    }
}

struct ActiveGuard<'a>(&'a AtomicI64);

impl<'a> ActiveGuard<'a> {
    fn new(a: &'a AtomicI64) -> Self {
        a.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(a)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts non-empty `"content": "..."` values in a byte stream cut at arbitrary places (the
/// OpenAI chunk format, with or without spaces around the colon).
#[derive(Debug, Default)]
pub struct TokenScan {
    buf: Vec<u8>,
    pub tokens: u32,
}

impl TokenScan {
    const KEY: &'static [u8] = b"\"content\"";

    /// Feeds the next bytes; returns the tokens completed by them.
    pub fn feed(&mut self, chunk: &[u8]) -> u32 {
        self.buf.extend_from_slice(chunk);
        let buf = &self.buf;
        let len = buf.len();
        let mut found = 0;
        let mut i = 0;
        let mut keep_from = len.saturating_sub(Self::KEY.len() - 1);
        while let Some(p) = find(&buf[i..], Self::KEY) {
            let start = i + p;
            let mut j = start + Self::KEY.len();
            let skip_ws = |mut j: usize| {
                while j < len && buf[j].is_ascii_whitespace() {
                    j += 1;
                }
                j
            };
            j = skip_ws(j);
            if j >= len {
                keep_from = start;
                break;
            }
            if buf[j] != b':' {
                i = start + 1;
                continue;
            }
            j = skip_ws(j + 1);
            if j + 1 >= len {
                keep_from = start;
                break;
            }
            if buf[j] == b'"' && buf[j + 1] != b'"' {
                found += 1;
            }
            i = j;
        }
        self.buf.drain(..keep_from.min(len));
        self.tokens += found;
        found
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One `GET path` on a fresh connection: status and body.
pub async fn get(
    ep: &Endpoint,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let fut = async {
        let tcp = TcpStream::connect(ep.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(header::HOST, ep.authority.as_str())
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        driver.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .context("timed out")?
}

// ---------------------------------------------------------------------------------------------
// Runs.

/// Sequential requests on one connection (concurrency 1): latencies and errors.
#[derive(Debug)]
pub struct SeqRun {
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `n` non-streaming requests one after another on one keep-alive connection, after `warmup`
/// unrecorded ones.
pub async fn sequential(ep: &Endpoint, body: Bytes, n: u64, warmup: u64) -> anyhow::Result<SeqRun> {
    let mut conn = Conn::new(ep);
    conn.open().await?;
    let mut run = SeqRun {
        hist: histogram()?,
        errors: 0,
        first_error: None,
    };
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let r = conn.call(PATH, body.clone(), REQUEST_TIMEOUT).await;
        let d = t0.elapsed();
        if i < warmup {
            continue;
        }
        match r {
            Ok(_) => record(&mut run.hist, d),
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(run)
}

/// The chat completions path every system serves.
pub const PATH: &str = "/v1/chat/completions";

/// Runs a concurrency-1 measurement on a current-thread runtime of its own, on one OS thread,
/// as a single-event-loop client does (wrk's threads, the Python and Node SDKs, a harness). On
/// the shared runtime, a connection's driver task and the task timing its requests may sit on
/// different workers, so every frame the client reads is a wake of a second thread that needs a
/// second CPU: on a 2-vCPU host shared with the simulator and the system under test, that hop
/// waits whenever a system is still busy after its first write (a gateway encoding the rest of
/// a burst), and the client's own wait is charged to that system's first token.
pub async fn on_own_thread<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the client's one-thread runtime")?
            .block_on(f())
    })
    .await
    .context("the client's thread")?
}

/// Sequential streamed requests: time to first token, whole-stream time, tokens per answer
/// (`min_tokens` is `u32::MAX` while no stream succeeded).
#[derive(Debug)]
pub struct StreamRun {
    pub ttft: Histogram<u64>,
    pub total: Histogram<u64>,
    pub min_tokens: u32,
    pub max_tokens: u32,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl StreamRun {
    pub fn empty() -> anyhow::Result<StreamRun> {
        Ok(StreamRun {
            ttft: histogram()?,
            total: histogram()?,
            min_tokens: u32::MAX,
            max_tokens: 0,
            errors: 0,
            first_error: None,
        })
    }

    /// Adds another run's numbers to this one.
    pub fn merge(&mut self, other: StreamRun) {
        self.ttft.add(&other.ttft).ok();
        self.total.add(&other.total).ok();
        if !other.ttft.is_empty() {
            self.min_tokens = self.min_tokens.min(other.min_tokens);
            self.max_tokens = self.max_tokens.max(other.max_tokens);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub async fn sequential_streams(
    ep: &Endpoint,
    body: Bytes,
    n: u64,
    warmup: u64,
) -> anyhow::Result<StreamRun> {
    let mut conn = Conn::new(ep);
    conn.open().await?;
    let mut run = StreamRun::empty()?;
    for i in 0..warmup + n {
        let r = conn.stream(PATH, body.clone(), REQUEST_TIMEOUT, None).await;
        if i < warmup {
            continue;
        }
        match r {
            Ok(StreamTiming {
                ttft: Some(ttft),
                total,
                tokens,
            }) => {
                record(&mut run.ttft, ttft);
                record(&mut run.total, total);
                run.min_tokens = run.min_tokens.min(tokens);
                run.max_tokens = run.max_tokens.max(tokens);
            }
            Ok(_) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| "a stream without any content token".to_owned());
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(run)
}

/// A closed-loop throughput run: requests completed inside the measured window.
#[derive(Debug)]
pub struct LoadRun {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub window: Duration,
    pub first_error: Option<String>,
}

impl LoadRun {
    pub fn rps(&self) -> f64 {
        let s = self.window.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// What one closed-loop worker does once: a request, `Ok` when it succeeded.
pub trait Worker: Send + 'static {
    fn call(
        &mut self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

struct HttpWorker {
    conn: Conn,
    body: Bytes,
}

impl Worker for HttpWorker {
    async fn call(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.conn
            .call(PATH, self.body.clone(), timeout)
            .await
            .map(drop)
    }
}

/// `concurrency` keep-alive connections, each a task sending requests back to back for `warmup`
/// (not recorded) and then `window` (recorded: requests that both start and finish inside it).
pub async fn closed_loop(
    ep: &Endpoint,
    body: Bytes,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<LoadRun> {
    let mut workers = Vec::with_capacity(concurrency);
    let mut opening = JoinSet::new();
    for _ in 0..concurrency {
        let ep = ep.clone();
        opening.spawn(async move {
            let mut conn = Conn::new(&ep);
            conn.open().await.map(|()| conn)
        });
    }
    while let Some(r) = opening.join_next().await {
        workers.push(HttpWorker {
            conn: r??,
            body: body.clone(),
        });
    }
    drive(workers, warmup, window).await
}

/// Runs the workers in a closed loop (see [`closed_loop`]).
pub async fn drive<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<LoadRun> {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + window;
    // In-flight requests at the end get this long before their task gives up on them.
    let grace = Duration::from_secs(2);
    let template = histogram()?;
    let mut tasks = JoinSet::new();
    for mut w in workers {
        let mut hist = Histogram::new_from(&template);
        tasks.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let timeout = REQUEST_TIMEOUT.min((end + grace).saturating_duration_since(t0));
                let r = w.call(timeout).await;
                let t1 = Instant::now();
                if t0 < measure_from || t1 > end {
                    continue;
                }
                match r {
                    Ok(()) => {
                        ok += 1;
                        record(&mut hist, t1 - t0);
                    }
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        // A refused connection fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (hist, ok, errors, first_error)
        });
    }
    let mut run = LoadRun {
        hist: template,
        ok: 0,
        errors: 0,
        window,
        first_error: None,
    };
    while let Some(r) = tasks.join_next().await {
        let (hist, ok, errors, first_error) = r?;
        run.hist.add(&hist).ok();
        run.ok += ok;
        run.errors += errors;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// The resident set size of a process, from `/proc/PID/status` (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The summed RSS of every process in process group `pgid` (a server and its workers), in KiB.
pub fn group_rss_kib(pgid: u32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<u32>().ok())
            == Some(pgid)
            && let Some(kib) = rss_kib(pid)
        {
            total += kib;
            any = true;
        }
    }
    any.then_some(total)
}

/// One RSS sample during a soak.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since the soak started.
    pub t_s: f64,
    pub rss_kib: u64,
    /// Streams open at that moment.
    pub active: i64,
}

#[derive(Debug)]
pub struct SoakRun {
    pub samples: Vec<RssSample>,
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// RSS a moment after every stream was closed.
    pub after_kib: Option<u64>,
}

/// Soak: `streams` connections, opened over `ramp`, each streaming answers back to back until
/// `duration` is over, while the RSS of `pid` is sampled every `every`.
pub async fn soak(
    ep: &Endpoint,
    body: Bytes,
    streams: usize,
    ramp: Duration,
    duration: Duration,
    every: Duration,
    pid: u32,
) -> anyhow::Result<SoakRun> {
    let start = Instant::now();
    let end = start + duration;
    let active = Arc::new(AtomicI64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..streams {
        let (ep, body, active, completed) = (
            ep.clone(),
            body.clone(),
            Arc::clone(&active),
            Arc::clone(&completed),
        );
        let delay = ramp.mul_f64(i as f64 / streams.max(1) as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut conn = Conn::new(&ep);
            let (mut errors, mut first_error) = (0u64, None::<String>);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let timeout = end.saturating_duration_since(now);
                match conn
                    .stream(PATH, body.clone(), timeout, Some(&active))
                    .await
                {
                    Ok(_) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Cut off by the end of the soak: not an error.
                    Err(_) if Instant::now() >= end => break,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (errors, first_error)
        });
    }
    let mut samples = Vec::new();
    let mut next = start;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let Some(rss) = rss_kib(pid) else {
            bail!("cannot read the RSS of process {pid}")
        };
        samples.push(RssSample {
            t_s: start.elapsed().as_secs_f64(),
            rss_kib: rss,
            active: active.load(Ordering::Relaxed),
        });
        next += every;
    }
    let (mut errors, mut first_error) = (0, None);
    while let Some(r) = tasks.join_next().await {
        let (e, f) = r?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(SoakRun {
        samples,
        completed: completed.load(Ordering::Relaxed),
        errors,
        first_error,
        after_kib: rss_kib(pid),
    })
}

#[cfg(test)]
mod tests {
    use super::TokenScan;

    #[test]
    fn token_scan_counts_across_cuts() {
        let text = br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}

data: {"choices":[{"delta":{"content":"Lorem"}}]}

data: {"choices":[{"delta":{"content": " ipsum"}}]}

data: {"choices":[{"delta":{"content":null}}]}

data: [DONE]

"#;
        for cut in 1..text.len() {
            let mut s = TokenScan::default();
            let a = s.feed(&text[..cut]);
            let b = s.feed(&text[cut..]);
            assert_eq!(a + b, 2, "cut at {cut}");
            assert_eq!(s.tokens, 2);
        }
        let mut s = TokenScan::default();
        for b in text.iter() {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.tokens, 2);
    }
}

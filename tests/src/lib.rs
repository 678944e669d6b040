//! End-to-end test helpers: a provider simulator and a gateway, both in-process on real loopback
//! sockets, the answers a healthy model gives (asked of the simulator itself), and runners for the
//! external clients — the Python SDK scripts in `tests/python/` and grpcurl — that `./scripts/test`
//! installs and names in `RETORT_PYTHON` and `RETORT_GRPCURL`.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use retort_gateway::{Running, config::Config};
use retort_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

/// The API key of the one configured user.
pub const KEY: &str = "sk-e2e-tester";

/// The alias whose first target always answers 503, so every request through it fails over.
pub const ALIAS: &str = "resilient";
/// The failing first target of [`ALIAS`] (an OpenAI-shaped provider).
pub const DOWN: &str = "sim-down";
/// The healthy second target of [`ALIAS`]: the model that serves its answers (provider `oa`).
pub const SERVED: &str = "sim-fast";
/// A healthy model behind the Anthropic-shaped provider `an`.
pub const CLAUDE: &str = "sim-claude";
/// A model that answers with a call to the first tool offered (provider `oa`).
pub const TOOLS: &str = "sim-tools";

/// The simulator's models: one always down, one that calls tools; every other name is healthy.
pub const SIM_MODELS: &str = r#"
strict_models = false
[models."sim-down"]
fault = "unavailable"
[models."sim-tools"]
tool_calls = true
"#;

/// The gateway's models, aliases and routing. Providers `oa` and `an` are added by [`env_with`].
pub const GATEWAY_MODELS: &str = r#"
[models."sim-down"]
provider = "oa"
[models."sim-fast"]
provider = "oa"
[models."sim-claude"]
provider = "an"
[models."sim-tools"]
provider = "oa"
[aliases.resilient]
targets = ["sim-down", "sim-fast"]
[routing]
max_retries_per_target = 1
backoff_base_ms = 10
backoff_max_ms = 50
first_token_timeout_ms = 10000
stall_timeout_ms = 10000
total_timeout_ms = 30000
[circuit]
failure_threshold = 1000
"#;

/// How long one external client run may take before it is killed and the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A simulator and a gateway in front of it.
pub struct Env {
    pub sim: SimHandle,
    pub gw: Running,
    pub http: reqwest::Client,
}

/// The standard environment: [`SIM_MODELS`] behind [`GATEWAY_MODELS`].
pub async fn env() -> Env {
    env_with(SIM_MODELS, GATEWAY_MODELS).await
}

/// `sim_models`: the simulator's TOML. `gateway`: the gateway's models, aliases and routing tables;
/// providers `oa` (OpenAI API) and `an` (Anthropic API) point at the simulator, the one user has
/// [`KEY`], and request bodies are limited to 64 KiB.
pub async fn env_with(sim_models: &str, gateway: &str) -> Env {
    let sim = retort_sim::spawn(SimConfig::from_toml(sim_models).expect("sim config"))
        .await
        .expect("sim starts");
    let text = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        max_body_bytes = 65536
        [[users]]
        name = "e2e"
        team = "qa"
        discipline = "backend"
        level = "senior"
        key = "{KEY}"
        [providers.oa]
        kind = "openai"
        base_url = "{base}/v1"
        [providers.an]
        kind = "anthropic"
        base_url = "{base}/v1"
        {gateway}
        "#,
        base = sim.base_url()
    );
    let cfg = Config::from_toml(&text).expect("gateway config");
    let gw = retort_gateway::start(cfg).await.expect("gateway starts");
    Env {
        sim,
        gw,
        http: reqwest::Client::new(),
    }
}

impl Env {
    /// `127.0.0.1:PORT` of the HTTP ingress.
    pub fn http_addr(&self) -> String {
        self.gw.http_addr.to_string()
    }

    /// `127.0.0.1:PORT` of the gRPC ingress.
    pub fn grpc_addr(&self) -> String {
        self.gw.grpc_addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.http_addr)
    }

    /// The answer a healthy simulator model gives to `prompt` (it depends only on the prompt), asked
    /// of the simulator directly, not through the gateway.
    pub async fn expected_answer(&self, prompt: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/v1/chat/completions", self.sim.base_url()))
            .json(&json!({"model": "reference-healthy", "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .expect("send to the simulator")
            .json()
            .await
            .expect("simulator json");
        let text = r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !text.is_empty(),
            "the simulator gave no reference answer: {r}"
        );
        text
    }

    pub async fn shutdown(self) {
        self.gw.shutdown().await;
        self.sim.shutdown();
    }
}

/// The path in the environment variable `var`, set by `./scripts/test`; panics (the test fails,
/// it is never skipped) when it is unset or names nothing.
pub fn tool_from_env(var: &str) -> PathBuf {
    let hint = "run the tests with ./scripts/test, which installs the Python SDKs and grpcurl in .venv \
                and exports RETORT_PYTHON and RETORT_GRPCURL";
    let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        panic!("{var} is not set: {hint}");
    };
    let p = PathBuf::from(v);
    assert!(p.is_file(), "{var}={} does not exist: {hint}", p.display());
    p
}

/// The Python interpreter of the venv (`RETORT_PYTHON`).
pub fn python() -> PathBuf {
    tool_from_env("RETORT_PYTHON")
}

/// The grpcurl binary (`RETORT_GRPCURL`).
pub fn grpcurl() -> PathBuf {
    tool_from_env("RETORT_GRPCURL")
}

/// A script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// What an external client did.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Panics with everything the client printed unless it exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "{} failed:\n{}", self.what, self.report());
        self
    }

    pub fn report(&self) -> String {
        let status = match (self.timed_out, self.status) {
            (true, _) => format!("killed after {} s", CLIENT_TIMEOUT.as_secs()),
            (false, Some(s)) => s.to_string(),
            (false, None) => "no exit status".into(),
        };
        format!(
            "{status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `program args` with [`CLIENT_TIMEOUT`], on a blocking thread so that the in-process
/// gateway keeps serving on the test's runtime meanwhile. Proxy variables are removed, so that
/// loopback traffic never goes through a proxy.
pub async fn run(program: PathBuf, args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || run_blocking(&program, &args, CLIENT_TIMEOUT))
        .await
        .expect("client runner thread")
}

fn run_blocking(program: &Path, args: &[String], timeout: Duration) -> Run {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(s)) => break (Some(s), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                break (child.wait().ok(), true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    Run {
        what,
        status,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `tests/python/<name>` with the venv's Python; `config` reaches the script as its one
/// argument, in JSON.
pub async fn run_python(name: &str, config: Value) -> Run {
    let path = script(name);
    assert!(path.is_file(), "missing script {}", path.display());
    run(
        python(),
        vec![path.display().to_string(), config.to_string()],
    )
    .await
}

/// Runs grpcurl with `args`.
pub async fn run_grpcurl(args: &[&str]) -> Run {
    run(grpcurl(), args.iter().map(|s| (*s).to_owned()).collect()).await
}

/// Parses concatenated JSON documents (grpcurl prints one per streamed message).
pub fn json_documents(s: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a sequence of JSON documents ({e}):\n{s}"))
}

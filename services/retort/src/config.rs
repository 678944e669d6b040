//! The configuration file: one TOML file for every service, read once into [`RetortConfig`], whose
//! sections are the services' own typed sections. Every table refuses keys it does not know, and a
//! refusal names the key's path and line. Each command then hands each service its section:
//! `retort up` all of them, `retort gateway` the gateway's (warning about the sections it does not
//! run), `retort metering|breaker|distill` their own.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use retort_breaker::config::RawBreaker;
use retort_distill::DistillConfig;
use retort_gateway::config::{
    Config, ENV_GRPC_ADDR, ENV_HTTP_ADDR, Identities, RawAlias, RawCircuit, RawConfig, RawModel,
    RawProvider, RawRouting, RawServer, RawService, RawUser,
};
use retort_metering::MeteringConfig;
use retort_pricing::Price;
use retort_selector::SelectorConfig;
use serde::{Deserialize, de::DeserializeOwned};

/// Where the services keep their files when the configuration names no `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "./retort-data";
/// The gateway's addresses when `[server]` names none (the gateway's own defaults).
const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

/// A whole configuration file. `deploy/retort.example.toml` documents every key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetortConfig {
    /// Where the services keep their files — metering's SQLite file and spool, distill's database
    /// and job folders, the demo's teacher answer key — unless a section names its own `data_dir`.
    /// Default `./retort-data`.
    pub data_dir: Option<PathBuf>,
    /// `[server]`: the gateway's listen addresses and request limits.
    #[serde(default)]
    pub server: RawServer,
    /// `[[users]]`: API keys and the users they stand for.
    #[serde(default)]
    pub users: Vec<RawUser>,
    /// `[[services]]`: the keys services call each other with (service identities).
    #[serde(default)]
    pub services: Vec<RawService>,
    /// `[providers.NAME]`: the upstream APIs the gateway calls.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// `[models.NAME]`: one upstream model of one provider each.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// `[aliases.NAME]`: names clients call, with targets tried in order.
    #[serde(default)]
    pub aliases: BTreeMap<String, RawAlias>,
    /// `[routing]`: timeouts, retries and backoff (aliases may override them).
    #[serde(default)]
    pub routing: RawRouting,
    /// `[circuit]`: the gateway's per-target circuit breakers.
    #[serde(default)]
    pub circuit: RawCircuit,
    /// `[metering]`: usage events, their store and the gateway's sink. Absent: metering still runs
    /// under `retort up`, on its defaults.
    pub metering: Option<MeteringConfig>,
    /// `[breaker]`: session breakers and budgets. Absent: `retort up` runs no breaker.
    pub breaker: Option<RawBreaker>,
    /// `[distill]`: the distillation service. Absent: `retort up` runs no distillation.
    pub distill: Option<DistillConfig>,
    /// `[selector]`: the student selector (auto-target). Absent: `retort up` runs it on its
    /// defaults beside `[distill]`.
    pub selector: Option<SelectorConfig>,
    /// `[[prices]]`: USD per million tokens, each effective from a day; one list for metering,
    /// the breaker and distill's reports.
    #[serde(default)]
    pub prices: Vec<Price>,
}

/// What `retort up` prints for the first request: a key and a model of this configuration.
#[derive(Debug, PartialEq)]
pub struct Example {
    /// The first user's key when the file spells it out; `$KEY` when it comes from the
    /// environment or a file (those are never printed).
    pub key: String,
    /// The first alias (by name), else the first model, else `MODEL`.
    pub model: String,
}

impl RetortConfig {
    /// Reads and parses a configuration file.
    pub fn read(path: &Path) -> anyhow::Result<RetortConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("loading {}", path.display()))
    }

    /// Reads `path`, or with none, an empty configuration (every service on its defaults).
    pub fn read_or_default(path: Option<&Path>) -> anyhow::Result<RetortConfig> {
        path.map_or_else(|| Ok(RetortConfig::default()), Self::read)
    }

    /// Parses a configuration. An error names the path of the key at fault and shows its line;
    /// sections renamed since earlier versions say what they are called now.
    pub fn parse(text: &str) -> anyhow::Result<RetortConfig> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        serde_path_to_error::deserialize(de).map_err(|e| anyhow::anyhow!(describe(&e)))
    }

    /// The data directory in force.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The sections present that only `retort up` (or each service's own command) runs.
    pub fn other_services(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.metering.is_some() {
            s.push("[metering]");
        }
        if self.breaker.is_some() {
            s.push("[breaker]");
        }
        if self.distill.is_some() {
            s.push("[distill]");
        }
        if self.selector.is_some() {
            s.push("[selector]");
        }
        if !self.prices.is_empty() {
            s.push("[[prices]]");
        }
        s
    }

    /// The gateway's HTTP and gRPC addresses, as the gateway will resolve them (the environment
    /// overrides `[server]`), for the services that reach it.
    pub fn gateway_addrs(&self) -> (SocketAddr, SocketAddr) {
        let pick = |var: &str, file: Option<SocketAddr>, default: SocketAddr| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .or(file)
                .unwrap_or(default)
        };
        (
            pick(ENV_HTTP_ADDR, self.server.http_addr, DEFAULT_HTTP_ADDR),
            pick(ENV_GRPC_ADDR, self.server.grpc_addr, DEFAULT_GRPC_ADDR),
        )
    }

    /// A key and model to show in the "ready" lines.
    pub fn example(&self) -> Example {
        let key = match self.users.first() {
            Some(RawUser { key: Some(k), .. }) => k.clone(),
            _ => "$KEY".into(),
        };
        let model = self
            .aliases
            .keys()
            .chain(self.models.keys())
            .next()
            .cloned()
            .unwrap_or_else(|| "MODEL".into());
        Example { key, model }
    }

    /// The gateway's runtime configuration, with the environment overrides. The gateway's sections
    /// are moved out, but for `[server]`, whose addresses the other services still read.
    pub fn gateway(&mut self) -> anyhow::Result<Config> {
        let s = &self.server;
        let raw = RawConfig {
            server: RawServer {
                http_addr: s.http_addr,
                grpc_addr: s.grpc_addr,
                max_body_bytes: s.max_body_bytes,
                require_auth: s.require_auth,
            },
            users: std::mem::take(&mut self.users),
            services: self.services.clone(),
            providers: std::mem::take(&mut self.providers),
            models: std::mem::take(&mut self.models),
            aliases: std::mem::take(&mut self.aliases),
            routing: std::mem::take(&mut self.routing),
            circuit: std::mem::take(&mut self.circuit),
        };
        Ok(Config::load(raw, &|k| std::env::var(k).ok())?)
    }

    /// The keys of `[[users]]` and `[[services]]` (a service run alone checks them; the gateway's
    /// own come with [`RetortConfig::gateway`]).
    pub fn identities(&self) -> anyhow::Result<Identities> {
        Ok(Identities::load(&self.users, &self.services, &|k| {
            std::env::var(k).ok()
        })?)
    }

    /// The key ring a service run alone checks, and the key its own clients call with.
    pub fn key_ring(&self) -> anyhow::Result<std::sync::Arc<retort_server::auth::KeyRing>> {
        Ok(std::sync::Arc::new(retort_gateway::auth::ring_of(
            &self.identities()?,
        )))
    }

    /// `[metering]` (or its defaults), in the data directory unless it names its own, with the
    /// environment overrides.
    pub fn metering(&self) -> anyhow::Result<MeteringConfig> {
        let mut m = section(&self.metering).context("[metering]")?;
        if m.data_dir.as_os_str().is_empty() {
            m.data_dir = self.data_dir();
        }
        Ok(m.load()?)
    }

    /// `[distill]` (or its defaults), in the data directory unless it names its own, reaching the
    /// gateway at the `[server]` addresses unless it names others.
    pub fn distill(&self) -> anyhow::Result<DistillConfig> {
        let mut d = section(&self.distill).context("[distill]")?;
        if d.data_dir.as_os_str().is_empty() {
            d.data_dir = self.data_dir();
        }
        let (http, grpc) = self.gateway_addrs();
        // Auto-target asks the selector `retort up` runs beside distill, unless the section names one.
        if d.selector_addr.is_empty()
            && let Some(s) = self.selector()?
        {
            d.selector_addr = format!("http://{}", s.grpc_addr);
        }
        Ok(d.load(http, grpc)?)
    }

    /// `[selector]` (or its defaults), in the data directory unless it names its own.
    pub fn selector_config(&self) -> anyhow::Result<SelectorConfig> {
        let mut s = section(&self.selector).context("[selector]")?;
        if s.data_dir.as_os_str().is_empty() {
            s.data_dir = self.data_dir();
        }
        // As metering and distill read it: one database for the mesh, each service in its schema.
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            s.database_url = Some(url);
        }
        Ok(s)
    }

    /// The selector `retort up` runs: with `[selector]`, or beside `[distill]`, unless disabled.
    pub fn selector(&self) -> anyhow::Result<Option<SelectorConfig>> {
        if self.selector.is_none() && self.distill.is_none() {
            return Ok(None);
        }
        let s = self.selector_config()?;
        Ok(s.enabled.then_some(s))
    }
}

/// A section as written, or (absent) as if written empty: the section's own serde defaults.
fn section<T: DeserializeOwned + Clone>(s: &Option<T>) -> anyhow::Result<T> {
    match s {
        Some(s) => Ok(s.clone()),
        None => Ok(toml::from_str("")?),
    }
}

/// Renders a refusal: what is wrong, where (the table holding an unknown key, or the key), what
/// a renamed section is called now, then the TOML parser's own report with the line.
fn describe(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner();
    let message = inner.message();
    // serde_path_to_error ends an unknown key's path with the key itself: name its table.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next());
    let table = match unknown {
        Some(key) if path == key => ".".to_string(),
        Some(key) => path
            .strip_suffix(&format!(".{key}"))
            .unwrap_or(&path)
            .to_string(),
        None => path.clone(),
    };
    let at = if table == "." {
        "at the top level".to_string()
    } else {
        format!("at {table}")
    };
    let hint = match path.as_str() {
        p if p == "spend" || p.starts_with("spend.") => Some(
            "`[spend]` is now `[breaker]` (the session and budget service): rename `[spend]`, \
             `[spend.policies.*]`, `[[spend.budgets]]` and `[spend.webhooks]` to `[breaker...]`",
        ),
        "breaker.failure_threshold" | "breaker.open_ms" => Some(
            "the gateway's per-target circuit breaker settings (`failure_threshold`, `open_ms`) \
             moved to `[circuit]`; `[breaker]` is now the session and budget service (`[spend]` before)",
        ),
        _ => None,
    };
    match hint {
        Some(h) => format!("invalid configuration: {h}\n({message} {at})\n{inner}"),
        None => format!("invalid configuration: {message} {at}\n{inner}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", RetortConfig::parse(text).unwrap_err())
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_path_and_line() {
        let e = err("[metering]\nenabled = true\n[metering.client]\nqueue_sizee = 1\n");
        assert!(
            e.contains("unknown field `queue_sizee`") && e.contains("at metering.client\n"),
            "{e}"
        );
        assert!(e.contains("4 | queue_sizee = 1"), "{e}");
        let e = err("[server]\nhttp_adr = \"127.0.0.1:1\"\n");
        assert!(
            e.contains("unknown field `http_adr`") && e.contains("at server"),
            "{e}"
        );
        let e = err(
            "[[prices]]\nmodel = \"m\"\neffective_from = \"2025-01-01\"\ninput = 1.0\noutput = 1.0\ntierr = \"x\"\n",
        );
        assert!(e.contains("at prices[0]"), "{e}");
        let e = err("nonsense = 1\n");
        assert!(
            e.contains("unknown field `nonsense`") && e.contains("at the top level"),
            "{e}"
        );
        let e = err("[breaker.policies.default]\nmode = \"notify\"\nmax_cost = 1\n");
        assert!(e.contains("at breaker.policies.default"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = err("[distill]\nlease_secs = \"thirty\"\n");
        assert!(e.contains("at distill.lease_secs"), "{e}");
    }

    #[test]
    fn the_renamed_sections_say_what_they_are_called_now() {
        let e = err("[spend]\ngrpc_addr = \"127.0.0.1:50053\"\n");
        assert!(e.contains("`[spend]` is now `[breaker]`"), "{e}");
        let e = err("[spend.policies.default]\nmode = \"pause\"\n");
        assert!(e.contains("`[spend]` is now `[breaker]`"), "{e}");
        let e = err("[breaker]\nfailure_threshold = 3\nopen_ms = 10000\n");
        assert!(e.contains("moved to `[circuit]`"), "{e}");
        let e = err("[breaker]\nopen_ms = 10000\n");
        assert!(e.contains("moved to `[circuit]`"), "{e}");
    }

    #[test]
    fn the_demo_and_example_configurations_load_whole() {
        let demo = RetortConfig::parse(crate::DEMO_CONFIG).unwrap();
        assert!(demo.metering.is_some() && demo.breaker.is_some() && demo.distill.is_some());
        assert!(demo.prices.iter().any(|p| p.model == "sim-teacher"));
        assert_eq!(demo.circuit.failure_threshold, Some(3));
        assert_eq!(
            demo.example(),
            Example {
                key: "sk-retort-demo".into(),
                model: "frontier".into()
            }
        );
        assert_eq!(demo.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
        let m = demo.metering().unwrap();
        assert_eq!(m.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let d = demo.distill().unwrap();
        assert_eq!(d.jobs_dir(), Path::new(DEFAULT_DATA_DIR).join("distill"));
        assert_eq!(d.gateway_key, "sk-retort-distill");
        let b = retort_breaker::BreakerConfig::load(demo.breaker.clone().unwrap(), None).unwrap();
        assert_eq!(b.grpc_addr.port(), 50053);

        let example =
            RetortConfig::parse(include_str!("../../../deploy/retort.example.toml")).unwrap();
        assert_eq!(
            example.example().key,
            "$KEY",
            "a key from the environment is never shown"
        );
        assert_eq!(example.example().model, "cheap");
        let m = example.metering().unwrap();
        assert_eq!(m.data_dir, PathBuf::from("/var/lib/retort"));
        assert_eq!(m.client.queue_size, 10_000);
        assert!(example.breaker.is_some());
        assert_eq!(example.prices.len(), 2);
    }

    #[test]
    fn sections_fill_in_from_the_rest_of_the_file() {
        let mut c = RetortConfig::parse(
            "data_dir = \"/srv/r\"\n[server]\nhttp_addr = \"127.0.0.1:9000\"\ngrpc_addr = \"127.0.0.1:9001\"\n[distill]\n[metering]\ndata_dir = \"/own\"\n",
        )
        .unwrap();
        // The gateway takes its sections first (`retort up`); the others still see `[server]`.
        assert_eq!(c.gateway().unwrap().server.http_addr.port(), 9000);
        let d = c.distill().unwrap();
        assert_eq!(d.data_dir, PathBuf::from("/srv/r"));
        assert_eq!(d.gateway_url, "http://127.0.0.1:9000");
        assert_eq!(d.gateway_grpc, "http://127.0.0.1:9001");
        assert_eq!(c.metering().unwrap().data_dir, PathBuf::from("/own"));
        assert_eq!(c.other_services(), ["[metering]", "[distill]"]);
        // Absent sections take their defaults, in the data directory.
        let empty = RetortConfig::parse("").unwrap();
        assert_eq!(
            empty.metering().unwrap().data_dir,
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            empty.distill().unwrap().gateway_url,
            "http://127.0.0.1:8080"
        );
        assert!(empty.other_services().is_empty());
    }
}

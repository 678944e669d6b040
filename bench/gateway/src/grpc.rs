//! gRPC load: `retort.v1.Gateway/Complete` through tonic's generated client.

use std::time::Duration;

use anyhow::{Context, bail};
use retort_proto::v1::{CompleteRequest, Message, Role, gateway_client::GatewayClient};
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::load::{LoadRun, Worker, drive};

struct GrpcWorker {
    client: GatewayClient<Channel>,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    model: String,
}

impl Worker for GrpcWorker {
    async fn call(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut req = tonic::Request::new(CompleteRequest {
            model: self.model.clone(),
            messages: vec![Message {
                role: Role::User as i32,
                text: "Say something short for the gateway benchmark.".into(),
                parts: Vec::new(),
            }],
            ..Default::default()
        });
        if let Some(a) = &self.auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let resp = tokio::time::timeout(timeout, self.client.complete(req))
            .await
            .context("timed out")?
            .map_err(|s| anyhow::anyhow!("gRPC status {:?}: {}", s.code(), s.message()))?;
        if resp.get_ref().text.is_empty() {
            bail!("an answer without text");
        }
        Ok(())
    }
}

/// `concurrency` workers over `connections` HTTP/2 connections (tonic channels), calling
/// `Complete` back to back; see [`crate::load::closed_loop`] for the windows.
pub async fn closed_loop(
    url: &str,
    key: Option<&str>,
    model: &str,
    concurrency: usize,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<LoadRun> {
    let auth = match key {
        Some(k) => Some(
            format!("Bearer {k}")
                .parse()
                .context("API key as gRPC metadata")?,
        ),
        None => None,
    };
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let ch = Channel::from_shared(url.to_owned())
            .with_context(|| format!("{url:?} is no gRPC URL"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(ch);
    }
    let workers = (0..concurrency)
        .map(|i| GrpcWorker {
            client: GatewayClient::new(channels[i % channels.len()].clone()),
            auth: auth.clone(),
            model: model.to_owned(),
        })
        .collect();
    drive(workers, warmup, window).await
}

//! `retort.v1.Metering` over gRPC: thin handlers over the domain ([`Metering`]), errors mapped to
//! statuses in one `From`, served by `retort_server::Grpc` (reflection, and `grpc.health.v1` tied
//! to the store's readiness).
use std::{collections::HashSet, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use retort_proto::v1::{self as pb, metering_server::MeteringServer};
use retort_server::{
    Grpc, Readiness,
    auth::{Caller, KeyRing},
};
use tonic::{Request, Response, Status};

use crate::{
    convert,
    error::MeteringError,
    pricing::Prices,
    query,
    store::{Col, Store},
    time,
};

/// Rejections listed in one summary (the count is always exact).
const MAX_LISTED_REJECTIONS: usize = 1000;
/// Events per CSV chunk read from the store.
const EXPORT_PAGE: i64 = 5000;
/// How often readiness (and so `grpc.health.v1`) asks the store.
const READY_EVERY: Duration = Duration::from_secs(2);

/// The domain: the store and the price table. gRPC and HTTP both call these.
pub struct Metering {
    pub store: Store,
    pub prices: Prices,
}

impl From<MeteringError> for Status {
    fn from(e: MeteringError) -> Status {
        match e {
            MeteringError::Invalid(_) | MeteringError::Price(_) => {
                Status::invalid_argument(e.to_string())
            }
            MeteringError::Forbidden(_) => Status::permission_denied(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }
}

impl Metering {
    pub fn new(store: Store, prices: Prices) -> Self {
        Metering { store, prices }
    }

    /// Ready while the store answers a query: what `grpc.health.v1` reports.
    pub async fn ready(&self) -> bool {
        // A BIGINT: Postgres types a bare `SELECT 1` as int4, which the store's integer columns
        // (read as i64) refuse, so the probe failed there forever.
        match self
            .store
            .select("SELECT CAST(1 AS BIGINT)", &[], &[Col::Int])
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, store = self.store.kind(), "metering: store not ready");
                false
            }
        }
    }

    /// Validates, prices and records one batch. Malformed events are rejected by field; the rest
    /// of the batch is kept. Events already recorded (same event id) count as duplicates.
    pub async fn ingest(
        &self,
        events: Vec<pb::UsageEvent>,
        summary: &mut pb::IngestSummary,
    ) -> Result<(), MeteringError> {
        let now = time::now_ms();
        let table = self.prices.snapshot();
        let mut records = Vec::with_capacity(events.len());
        let mut seen = HashSet::with_capacity(events.len());
        summary.received += events.len() as u64;
        for (i, e) in events.iter().enumerate() {
            match convert::to_record(e, now) {
                Ok(mut r) => {
                    if !seen.insert(r.event_id.clone()) {
                        summary.duplicates += 1;
                        continue;
                    }
                    self.prices.price(&table, &mut r);
                    records.push(r);
                }
                Err(bad) => {
                    summary.rejected_count += 1;
                    if summary.rejected.len() < MAX_LISTED_REJECTIONS {
                        summary.rejected.push(pb::EventRejection {
                            event_id: e.event_id.clone(),
                            index: i as u32,
                            field: bad.field.to_string(),
                            reason: format!("{}: {}", bad.field, bad.reason),
                        });
                    }
                }
            }
        }
        let valid = records.len();
        let new = self.store.insert(records).await?;
        summary.recorded += new.len() as u64;
        summary.duplicates += (valid - new.len()) as u64;
        summary.unpriced += new.iter().filter(|r| r.unpriced).count() as u64;
        Ok(())
    }

    pub async fn set_price(
        &self,
        p: pb::MeteringPrice,
    ) -> Result<pb::MeteringPrice, MeteringError> {
        let price = from_pb_price(p);
        Ok(to_pb_price(&self.prices.set(&self.store, price).await?))
    }

    pub fn list_prices(&self) -> Vec<pb::MeteringPrice> {
        self.prices.snapshot().entries().map(to_pb_price).collect()
    }
}

pub fn to_pb_price(p: &retort_pricing::Price) -> pb::MeteringPrice {
    pb::MeteringPrice {
        model: p.model.clone(),
        effective_from: p.effective_from.clone(),
        input: p.input,
        output: p.output,
        reasoning: p.reasoning,
        cache_read: p.cache_read,
        cache_write: p.cache_write,
        tier: p.tier(),
    }
}

pub fn from_pb_price(p: pb::MeteringPrice) -> retort_pricing::Price {
    retort_pricing::Price {
        model: p.model,
        effective_from: p.effective_from,
        input: p.input,
        output: p.output,
        reasoning: p.reasoning,
        cache_read: p.cache_read,
        cache_write: p.cache_write,
        tier: if p.tier.is_empty() {
            None
        } else {
            Some(p.tier)
        },
    }
}

/// Narrows a usage filter to what `caller` may see: a user their own usage, a team admin their
/// team's, admins and service identities everything. Asking for someone else's is refused rather
/// than silently answered with less.
pub fn scope(caller: &Caller, f: &mut pb::UsageFilter) -> Result<(), MeteringError> {
    let Some(p) = caller.principal() else {
        return Ok(());
    };
    let (field, own, what) = match p.role {
        retort_hooks::Role::Admin | retort_hooks::Role::Service => return Ok(()),
        retort_hooks::Role::TeamAdmin => (&mut f.teams, &p.identity.team, "team"),
        retort_hooks::Role::User => (&mut f.users, &p.identity.user, "user"),
    };
    if field.iter().any(|v| v != own) {
        return Err(MeteringError::Forbidden(format!(
            "{} may see only the usage of {what} {own:?} (ask an admin for more)",
            p.identity.user
        )));
    }
    *field = vec![own.clone()];
    Ok(())
}

/// Price edits are for admins.
pub fn may_set_prices(caller: &Caller) -> Result<(), MeteringError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(MeteringError::Forbidden(
            "only admins may edit prices".into(),
        ))
    }
}

fn scoped(caller: &Caller, f: Option<pb::UsageFilter>) -> Result<pb::UsageFilter, Status> {
    let mut f = f.unwrap_or_default();
    scope(caller, &mut f)?;
    Ok(f)
}

/// The tonic service.
pub struct MeteringService(pub Arc<Metering>);

type CsvStream = Pin<Box<dyn Stream<Item = Result<pb::CsvChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::metering_server::Metering for MeteringService {
    async fn ingest(
        &self,
        request: Request<tonic::Streaming<pb::UsageBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
        // Only service identities (the gateway's sink) record usage: anyone else could forge spend.
        if !Caller::of(&request).is_service() {
            return Err(Status::permission_denied(
                "permission denied: only service identities may ingest usage",
            ));
        }
        let mut stream = request.into_inner();
        let mut summary = pb::IngestSummary::default();
        while let Some(batch) = stream.next().await {
            self.0.ingest(batch?.events, &mut summary).await?;
        }
        Ok(Response::new(summary))
    }

    async fn query(
        &self,
        request: Request<pb::UsageQuery>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        let caller = Caller::of(&request);
        let mut q = request.into_inner();
        q.filter = Some(scoped(&caller, q.filter)?);
        Ok(Response::new(query::grouped(&self.0.store, &q).await?))
    }

    async fn top_users(
        &self,
        request: Request<pb::TopRequest>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        let caller = Caller::of(&request);
        let mut q = request.into_inner();
        q.filter = Some(scoped(&caller, q.filter)?);
        Ok(Response::new(
            query::top_users(&self.0.store, &self.0.prices, &q).await?,
        ))
    }

    async fn top_reasoning(
        &self,
        request: Request<pb::TopRequest>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        let caller = Caller::of(&request);
        let mut q = request.into_inner();
        q.filter = Some(scoped(&caller, q.filter)?);
        Ok(Response::new(
            query::top_reasoning(&self.0.store, &q).await?,
        ))
    }

    async fn model_mix(
        &self,
        request: Request<pb::UsageQuery>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        let caller = Caller::of(&request);
        let mut q = request.into_inner();
        q.filter = Some(scoped(&caller, q.filter)?);
        Ok(Response::new(query::model_mix(&self.0.store, &q).await?))
    }

    async fn sessions(
        &self,
        request: Request<pb::SessionsRequest>,
    ) -> Result<Response<pb::SessionsResponse>, Status> {
        let caller = Caller::of(&request);
        let mut q = request.into_inner();
        q.filter = Some(scoped(&caller, q.filter)?);
        Ok(Response::new(query::sessions(&self.0.store, &q).await?))
    }

    async fn set_price(
        &self,
        request: Request<pb::MeteringPrice>,
    ) -> Result<Response<pb::MeteringPrice>, Status> {
        may_set_prices(&Caller::of(&request))?;
        let by = Caller::of(&request).name().to_owned();
        let saved = self.0.set_price(request.into_inner()).await?;
        tracing::info!(by, model = %saved.model, effective_from = %saved.effective_from, "metering: price set");
        Ok(Response::new(saved))
    }

    async fn list_prices(
        &self,
        _: Request<pb::ListPricesRequest>,
    ) -> Result<Response<pb::ListPricesResponse>, Status> {
        Ok(Response::new(pb::ListPricesResponse {
            prices: self.0.list_prices(),
        }))
    }

    type ExportCsvStream = CsvStream;

    async fn export_csv(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<CsvStream>, Status> {
        let caller = Caller::of(&request);
        let filter = scoped(&caller, request.into_inner().filter)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let m = Arc::clone(&self.0);
        tokio::spawn(async move {
            if tx
                .send(Ok(pb::CsvChunk {
                    text: query::CSV_HEADER.to_string(),
                }))
                .await
                .is_err()
            {
                return;
            }
            let mut after = None;
            loop {
                match query::export_page(&m.store, &filter, after, EXPORT_PAGE).await {
                    Ok((text, next)) => {
                        if !text.is_empty() && tx.send(Ok(pb::CsvChunk { text })).await.is_err() {
                            return;
                        }
                        match next {
                            Some(n) => after = Some(n),
                            None => return,
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves `retort.v1.Metering` on `listener` until `shutdown`, through the workspace's one gRPC
/// scaffold: `grpc.health.v1` follows [`Metering::ready`], reflection lists the service.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metering: Arc<Metering>,
    keys: Option<Arc<KeyRing>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let readiness = Readiness::new(READY_EVERY, {
        let m = Arc::clone(&metering);
        move || {
            let m = Arc::clone(&m);
            async move { m.ready().await }
        }
    });
    let mut grpc = Grpc::new("metering");
    if let Some(keys) = keys {
        grpc = grpc.authenticate(keys);
    }
    grpc.add_service(
        MeteringServer::new(MeteringService(metering)).max_decoding_message_size(16 << 20),
    )
    .serve(listener, readiness, shutdown)
    .await
}

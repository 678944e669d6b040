//! `retort.v1.Metering` over gRPC: thin handlers over the domain ([`Metering`]), errors mapped to
//! statuses in one `From`, served by `retort_server::Grpc` (reflection, and `grpc.health.v1` tied
//! to the store's readiness).
use std::{collections::HashSet, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use retort_proto::v1::{self as pb, metering_server::MeteringServer};
use retort_server::{Grpc, Readiness};
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

/// The tonic service.
pub struct MeteringService(pub Arc<Metering>);

type CsvStream = Pin<Box<dyn Stream<Item = Result<pb::CsvChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::metering_server::Metering for MeteringService {
    async fn ingest(
        &self,
        request: Request<tonic::Streaming<pb::UsageBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
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
        Ok(Response::new(
            query::grouped(&self.0.store, request.get_ref()).await?,
        ))
    }

    async fn top_users(
        &self,
        request: Request<pb::TopRequest>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        Ok(Response::new(
            query::top_users(&self.0.store, &self.0.prices, request.get_ref()).await?,
        ))
    }

    async fn top_reasoning(
        &self,
        request: Request<pb::TopRequest>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        Ok(Response::new(
            query::top_reasoning(&self.0.store, request.get_ref()).await?,
        ))
    }

    async fn model_mix(
        &self,
        request: Request<pb::UsageQuery>,
    ) -> Result<Response<pb::UsageQueryResponse>, Status> {
        Ok(Response::new(
            query::model_mix(&self.0.store, request.get_ref()).await?,
        ))
    }

    async fn sessions(
        &self,
        request: Request<pb::SessionsRequest>,
    ) -> Result<Response<pb::SessionsResponse>, Status> {
        Ok(Response::new(
            query::sessions(&self.0.store, request.get_ref()).await?,
        ))
    }

    async fn set_price(
        &self,
        request: Request<pb::MeteringPrice>,
    ) -> Result<Response<pb::MeteringPrice>, Status> {
        Ok(Response::new(self.0.set_price(request.into_inner()).await?))
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
        let filter = request.into_inner().filter.unwrap_or_default();
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
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let readiness = Readiness::new(READY_EVERY, {
        let m = Arc::clone(&metering);
        move || {
            let m = Arc::clone(&m);
            async move { m.ready().await }
        }
    });
    Grpc::new("metering")
        .add_service(
            MeteringServer::new(MeteringService(metering)).max_decoding_message_size(16 << 20),
        )
        .serve(listener, readiness, shutdown)
        .await
}

//! `grpc.health.v1` follows the store's readiness on both databases: metering's service and the
//! server as a whole reach SERVING once the store answers its probe. (On Postgres the probe once
//! read an int4 as i64 and failed forever, so health said NOT_SERVING to every load balancer.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{net::SocketAddr, time::Duration};

use common::TestStore;
use retort_metering::MeteringConfig;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The status health reports for `service`, polled until SERVING or 10 s have passed.
async fn status_within_10s(addr: SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut last = ServingStatus::Unknown;
    for _ in 0..100 {
        let r = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        if let Ok(r) = r {
            last = r.into_inner().status();
            if last == ServingStatus::Serving {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

async fn health_reaches_serving(ts: TestStore) {
    let cfg = MeteringConfig {
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let running = retort_metering::start_with_store(&cfg, ts.store.clone(), common::prices())
        .await
        .unwrap();
    for service in ["retort.v1.Metering", ""] {
        assert_eq!(
            status_within_10s(running.grpc_addr, service).await,
            ServingStatus::Serving,
            "{} health of {service:?}",
            ts.store.kind()
        );
    }
    running.shutdown().await;
    ts.cleanup().await;
}

#[tokio::test]
async fn health_is_serving_on_postgres_once_the_store_answers() {
    health_reaches_serving(TestStore::postgres().await).await;
}

#[tokio::test]
async fn health_is_serving_on_sqlite_once_the_store_answers() {
    health_reaches_serving(TestStore::sqlite().await).await;
}

//! The guard's background thread: everything it exchanges with the breaker, off the request path.
//! It asks for, renews and returns leases (and voids one it could not renew in time), settles the
//! usage summed since the last flush in batches retried under the same id until taken, and learns
//! which sessions are paused or stopped.
use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use retort_proto::v1::{self as pb, breaker_client::BreakerClient};

use super::{Account, Batch, Inner, SESSION_IDLE, State};
use crate::config::Unreachable;

type Client = BreakerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        retort_server::auth::WithKey,
    >,
>;

/// The thread's loop: every flush interval (or when a request is short of allowance), refresh
/// leases, then settle usage.
pub(super) async fn run(inner: Arc<Inner>) {
    let channel = match tonic::transport::Endpoint::from_shared(inner.cfg.endpoint.clone()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy(),
        Err(e) => {
            tracing::error!(error = %e, endpoint = %inner.cfg.endpoint, "spend guard: bad breaker endpoint");
            inner.lock().last_error = Some(format!("bad breaker endpoint: {e}"));
            inner.healthy.store(false, Ordering::Relaxed);
            return;
        }
    };
    let mut client = BreakerClient::with_interceptor(
        channel,
        retort_server::auth::WithKey::new(inner.key.as_deref()),
    );
    while !inner.stop.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(inner.cfg.flush, inner.wake.notified()).await;
        refresh(&inner, &mut client).await;
        flush(&inner, &mut client).await;
    }
}

fn set_health(inner: &Inner, st: &mut State, r: Result<(), String>) {
    match r {
        Ok(()) => {
            if !inner.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!("spend guard: the breaker service is reachable again");
            }
            st.last_error = None;
        }
        Err(e) => {
            if inner.healthy.swap(false, Ordering::Relaxed) {
                match inner.cfg.on_unreachable {
                    Unreachable::FailOpen => {
                        tracing::warn!(error = %e, "spend guard: breaker unreachable — failing OPEN: requests are admitted unmetered")
                    }
                    Unreachable::FailClosed => {
                        tracing::error!(error = %e, "spend guard: breaker unreachable — failing CLOSED: requests are refused")
                    }
                }
            }
            st.last_error = Some(e);
        }
    }
    inner.cv.notify_all();
}

fn blocked_map(b: Vec<pb::BlockedSession>) -> HashMap<String, HashMap<String, String>> {
    let mut m: HashMap<String, HashMap<String, String>> = HashMap::new();
    for b in b {
        m.entry(b.user).or_default().insert(b.session_id, b.message);
    }
    m
}

/// What to ask the breaker for one account, if anything; voids a lease that lapsed unrenewed.
fn ask_for(inner: &Inner, a: &mut Account, now: Instant, ttl: Duration) -> Option<pb::LeaseAsk> {
    let cfg = &inner.cfg;
    if a.known && !a.unlimited() && a.renewed.is_some_and(|r| now.duration_since(r) >= ttl) {
        // The breaker has let this lease go: spending it now could spend it twice.
        tracing::warn!(principal = %a.principal, "spend guard: lease lapsed before it could be renewed; voiding it");
        inner.stats.lapsed.fetch_add(1, Ordering::Relaxed);
        (a.known, a.micros, a.tokens, a.renewed) = (false, 0, 0, None);
        a.epoch = a.epoch.wrapping_add(1);
    }
    let idle = a
        .last_used
        .is_none_or(|t| now.duration_since(t) > cfg.idle_return);
    // Requests admitted earlier may still hold part of the lease even when nothing is left here.
    let renew =
        a.known && !a.unlimited() && a.renewed.is_some_and(|r| now.duration_since(r) >= ttl / 3);
    let low = !a.known
        || (!a.micros_unlimited && a.micros < cfg.lease_micros / 2)
        || (!a.tokens_unlimited && a.tokens < cfg.lease_tokens as i64 / 2);
    let mut ask = pb::LeaseAsk {
        principal: a.principal.clone(),
        ..Default::default()
    };
    if idle && a.known && !a.want {
        // Give unused allowance back so other gateways can spend it.
        ask.return_micros = if a.micros_unlimited {
            0
        } else {
            a.micros.max(0)
        };
        ask.return_tokens = if a.tokens_unlimited {
            0
        } else {
            a.tokens.max(0) as u64
        };
        if ask.return_micros == 0 && ask.return_tokens == 0 && !renew {
            return None;
        }
        a.micros -= ask.return_micros;
        a.tokens -= ask.return_tokens as i64;
    } else if a.want || (low && a.exhausted.is_none()) {
        // A lease, or more when a waiting request's worst case is larger than one.
        let (lease_micros, lease_tokens) = (
            cfg.lease_micros.max(a.need_micros),
            (cfg.lease_tokens as i64).max(a.need_tokens),
        );
        ask.want_micros = if a.micros_unlimited && a.known {
            0
        } else {
            (lease_micros - a.micros).max(0)
        };
        ask.want_tokens = if a.tokens_unlimited && a.known {
            0
        } else {
            (lease_tokens - a.tokens).max(0) as u64
        };
        if a.known && ask.want_micros == 0 && ask.want_tokens == 0 && !a.want {
            return None;
        }
    } else if !renew {
        return None;
    }
    // Otherwise: nothing asked, nothing returned — a renewal of a lease still in use.
    a.want = false;
    (a.need_micros, a.need_tokens) = (0, 0);
    Some(ask)
}

async fn refresh(inner: &Inner, client: &mut Client) {
    let now = Instant::now();
    let asks: Vec<pb::LeaseAsk> = {
        let mut st = inner.lock();
        let ttl = st.ttl;
        st.accounts
            .iter_mut()
            .filter_map(|a| ask_for(inner, a, now, ttl))
            .collect()
    };
    if asks.is_empty() {
        return;
    }
    let r = client
        .lease(pb::LeaseRequest {
            gateway_id: inner.gateway_id.clone(),
            asks: asks.clone(),
        })
        .await;
    let mut st = inner.lock();
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            if resp.lease_ttl_ms > 0 {
                st.ttl = Duration::from_millis(resp.lease_ttl_ms.max(1000) as u64);
            }
            for g in resp.grants {
                let Some(&i) = st.account_ix.get(&g.principal) else {
                    continue;
                };
                let a = &mut st.accounts[i];
                a.known = true;
                a.micros_unlimited = g.unlimited || g.micros_unlimited;
                a.tokens_unlimited = g.unlimited || g.tokens_unlimited;
                a.micros += g.micros;
                a.tokens += g.tokens as i64;
                a.exhausted = g.exhausted.then_some(g.reason);
                a.renewed = Some(now);
            }
            st.blocked = blocked_map(resp.blocked);
            set_health(inner, &mut st, Ok(()));
        }
        Err(e) => {
            // The returns did not arrive: keep them.
            for ask in asks {
                if let Some(&i) = st.account_ix.get(&ask.principal) {
                    let a = &mut st.accounts[i];
                    a.micros += ask.return_micros;
                    a.tokens += ask.return_tokens as i64;
                }
            }
            set_health(inner, &mut st, Err(format!("lease: {}", e.message())));
        }
    }
}

async fn flush(inner: &Inner, client: &mut Client) {
    let (batch_id, usage) = {
        let mut st = inner.lock();
        if st.batch.is_none() {
            let usage = st.drain_usage(Instant::now(), SESSION_IDLE);
            if !usage.is_empty() {
                st.batches += 1;
                let id = format!("{}-{}", inner.gateway_id, st.batches);
                st.batch = Some(Batch { id, usage });
            }
        }
        st.batch
            .as_ref()
            .map_or_else(Default::default, |b| (b.id.clone(), b.usage.clone()))
    };
    let r = client
        .settle(pb::ReportRequest {
            gateway_id: inner.gateway_id.clone(),
            usage,
            batch_id: batch_id.clone(),
        })
        .await;
    let mut st = inner.lock();
    match r {
        Ok(resp) => {
            if st.batch.as_ref().is_some_and(|b| b.id == batch_id) {
                st.batch = None;
            }
            st.blocked = blocked_map(resp.into_inner().blocked);
            set_health(inner, &mut st, Ok(()));
        }
        // The batch stays and goes again, under the same id, until the breaker takes it.
        Err(e) => set_health(inner, &mut st, Err(format!("settle: {}", e.message()))),
    }
}

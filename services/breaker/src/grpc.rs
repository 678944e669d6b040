//! `retort.v1.Breaker` over gRPC: thin handlers over [`Breaker`], served by the one scaffold
//! ([`retort_server::Grpc`]: reflection, and `grpc.health.v1` tied to whether the state store
//! answers).
use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use retort_proto::v1::{self as pb, breaker_server::BreakerServer};
use retort_server::{
    Grpc, Readiness, Serving,
    auth::{Caller, KeyRing, require},
};
use tokio::sync::watch;
use tokio_stream::{StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::{Error, config::BreakerConfig, core::Breaker, store::Store};

pub struct BreakerService {
    pub breaker: Arc<Breaker>,
    /// Ends `Watch` streams when the server shuts down (graceful shutdown waits for every stream).
    pub stopping: watch::Receiver<bool>,
}

/// Who the audit trail names: the authenticated caller; a service identity (the confirm page)
/// may name the person it acts for, having checked them itself.
fn by<T>(req: &Request<T>, given: &str) -> String {
    let caller = Caller::of(req);
    if caller.is_service() && !given.is_empty() {
        return given.to_owned();
    }
    match caller {
        Caller::Key(p) => p.identity.user,
        Caller::Open => req
            .remote_addr()
            .map_or_else(|| "grpc".into(), |a| format!("grpc {a}")),
    }
}

const OPERATORS: &str = "admins and service identities";

/// Refuses a caller who may not act on `user`'s session of `team`.
fn owner_or_admin(c: &Caller, user: &str, team: &str) -> Result<(), Status> {
    require(
        c.may_act_for(user, team),
        "the session's owner, their team admin, an admin or a service identity",
    )
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::Alert, Status>> + Send>>;

#[tonic::async_trait]
impl pb::breaker_server::Breaker for BreakerService {
    async fn report(
        &self,
        r: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        require(Caller::of(&r).is_operator(), OPERATORS)?;
        let r = r.into_inner();
        let blocked = self
            .breaker
            .record(r.usage, false, &r.gateway_id, &r.batch_id)
            .await?;
        Ok(Response::new(pb::ReportResponse { blocked }))
    }

    async fn settle(
        &self,
        r: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        require(Caller::of(&r).is_operator(), OPERATORS)?;
        let r = r.into_inner();
        let blocked = self
            .breaker
            .record(r.usage, true, &r.gateway_id, &r.batch_id)
            .await?;
        Ok(Response::new(pb::ReportResponse { blocked }))
    }

    async fn lease(
        &self,
        r: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        require(Caller::of(&r).is_operator(), OPERATORS)?;
        let r = r.into_inner();
        let mut grants = Vec::new();
        for ask in &r.asks {
            grants.push(self.breaker.lease(ask, &r.gateway_id).await?);
        }
        Ok(Response::new(pb::LeaseResponse {
            grants,
            blocked: self.breaker.blocked().await?,
            lease_ttl_ms: self.breaker.lease_ttl_ms(),
        }))
    }

    type WatchStream = AlertStream;

    /// Where things stand first (every session of the watcher's scope that is not `ok`), then
    /// alerts as they happen. The live feed is subscribed before the snapshot is read, so nothing
    /// that happens in between is missed (it may arrive twice: once in each).
    async fn watch(&self, r: Request<pb::WatchRequest>) -> Result<Response<AlertStream>, Status> {
        // A user watches their own alerts; admins and services anyone's.
        let caller = Caller::of(&r);
        let mut user = r.into_inner().user;
        if let Caller::Key(p) = &caller
            && !p.is_operator()
        {
            require(
                user.is_empty() || user == p.identity.user,
                "admins (for another user's alerts)",
            )?;
            user = p.identity.user.clone();
        }
        let live = self.breaker.subscribe();
        let now = self.breaker.current_alerts(&user).await?;
        let live = BroadcastStream::new(live).filter_map(move |a| match a {
            Ok(a) if user.is_empty() || a.user == user => Some(Ok(a)),
            Ok(_) => None,
            Err(_) => Some(Err(Status::data_loss(
                "alerts were dropped: this watcher fell behind",
            ))),
        });
        let s = tokio_stream::iter(now.into_iter().map(Ok)).chain(live);
        let mut stopping = self.stopping.clone();
        let s = futures::StreamExt::take_until(s, async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn confirm(
        &self,
        r: Request<pb::SessionAction>,
    ) -> Result<Response<pb::Session>, Status> {
        let who = by(&r, &r.get_ref().by);
        let caller = Caller::of(&r);
        let a = r.into_inner();
        let (s, _) = self.breaker.find(&a.session_id, &a.user).await?;
        owner_or_admin(&caller, &s.user, &s.team)?;
        let s = self.breaker.confirm(&a.session_id, &s.user, &who).await?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn stop(&self, r: Request<pb::SessionAction>) -> Result<Response<pb::Session>, Status> {
        let who = by(&r, &r.get_ref().by);
        let caller = Caller::of(&r);
        let a = r.into_inner();
        let (s, _) = self.breaker.find(&a.session_id, &a.user).await?;
        owner_or_admin(&caller, &s.user, &s.team)?;
        let s = self.breaker.stop(&a.session_id, &s.user, &who).await?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn get_session(
        &self,
        r: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = Caller::of(&r);
        let a = r.into_inner();
        let (s, _) = self.breaker.find(&a.session_id, &a.user).await?;
        owner_or_admin(&caller, &s.user, &s.team)?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn list_sessions(
        &self,
        r: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = Caller::of(&r);
        let user = r.into_inner().user;
        let mut sessions: Vec<_> = self
            .breaker
            .store
            .list_sessions()
            .await
            .map_err(Status::from)?;
        sessions.retain(|s| {
            (user.is_empty() || s.user == user) && caller.may_act_for(&s.user, &s.team)
        });
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_ms));
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(|s| self.breaker.to_pb(s)).collect(),
        }))
    }

    async fn set_policies(
        &self,
        r: Request<pb::SetPoliciesRequest>,
    ) -> Result<Response<pb::SetPoliciesResponse>, Status> {
        require(Caller::of(&r).is_operator(), OPERATORS)?;
        tracing::info!(by = Caller::of(&r).name(), "breaker: policies replaced");
        let (policies, budgets) = self.breaker.set_policies(&r.into_inner().toml)?;
        Ok(Response::new(pb::SetPoliciesResponse {
            policies: policies as u32,
            budgets: budgets as u32,
        }))
    }

    async fn get_budgets(
        &self,
        r: Request<pb::GetBudgetsRequest>,
    ) -> Result<Response<pb::GetBudgetsResponse>, Status> {
        let caller = Caller::of(&r);
        let principal = r.into_inner().principal;
        // A user reads their own budget, a team admin also their team's; admins and services any.
        if let Caller::Key(p) = &caller
            && !p.is_operator()
        {
            let own = format!("user:{}", p.identity.user);
            let team = format!("team:{}", p.identity.team);
            require(
                principal == own || (p.role == retort_hooks::Role::TeamAdmin && principal == team),
                "admins (for budgets other than your own)",
            )?;
        }
        let budgets = self.breaker.budgets(&principal).await?;
        Ok(Response::new(pb::GetBudgetsResponse { budgets }))
    }
}

/// A running breaker service.
pub struct Running {
    pub addr: SocketAddr,
    pub breaker: Arc<Breaker>,
    server: Serving,
}

impl Running {
    /// Stops accepting, ends the `Watch` streams, lets other calls finish, and waits.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Waits until the server has stopped (after `true` is sent on [`Running::stopper`]).
    pub async fn wait(self) {
        self.server.wait().await;
    }

    /// A handle that stops the server (and ends `Watch` streams) when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.server.stopper()
    }
}

/// Opens the store (Redis when configured), loads the policies and serves `retort.v1.Breaker`.
pub async fn start(cfg: &BreakerConfig) -> Result<Running, Error> {
    let store = match &cfg.redis_url {
        Some(url) => Store::redis(url, &cfg.key_prefix).await?,
        None => Store::memory(),
    };
    let public = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let breaker = Breaker::new(store, cfg.policies.clone(), public).await?;
    breaker.set_lease_ttl_ms(cfg.lease_ttl_ms);
    serve_with_keys(cfg.grpc_addr, breaker, cfg.keys.clone()).await
}

/// Serves `breaker` on `addr` (port 0 picks a free one) until [`Running::shutdown`], without a key
/// check (a breaker embedded in a test or tool: every caller is trusted).
pub async fn serve(addr: SocketAddr, breaker: Arc<Breaker>) -> Result<Running, Error> {
    serve_with_keys(addr, breaker, None).await
}

/// Serves `breaker`; with `keys`, every call but health and reflection must carry one of them.
pub async fn serve_with_keys(
    addr: SocketAddr,
    breaker: Arc<Breaker>,
    keys: Option<Arc<KeyRing>>,
) -> Result<Running, Error> {
    // Health follows the store: NOT_SERVING while Redis does not answer.
    let readiness = Readiness::new(Duration::from_millis(500), {
        let b = Arc::clone(&breaker);
        move || {
            let b = Arc::clone(&b);
            async move {
                b.store
                    .ping()
                    .await
                    .map_err(|e| tracing::warn!(error = %crate::chain(&e), "breaker state store unreachable"))
                    .is_ok()
            }
        }
    });
    // One signal stops the server and ends the `Watch` streams, which graceful shutdown waits for.
    let mut grpc = Grpc::new("breaker");
    if let Some(keys) = keys {
        grpc = grpc.authenticate(keys);
    }
    let svc = BreakerService {
        breaker: Arc::clone(&breaker),
        stopping: grpc.stopping(),
    };
    let server = grpc
        .add_service(BreakerServer::new(svc).max_decoding_message_size(16 << 20))
        .spawn(addr, readiness)
        .await?;
    Ok(Running {
        addr: server.addr,
        breaker,
        server,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use retort_proto::v1::breaker_client::BreakerClient;

    use super::*;
    use crate::{now_ms, policy::Policies};

    fn usage(user: &str, session: &str, tokens: u64) -> pb::UsageRecord {
        pb::UsageRecord {
            user: user.into(),
            team: "qa".into(),
            session_id: session.into(),
            model: "m".into(),
            tier: "mid".into(),
            tokens,
            cost_micros: 10,
            time_unix_ms: now_ms(),
            requests: 1,
        }
    }

    async fn next(w: &mut tonic::Streaming<pb::Alert>) -> pb::Alert {
        tokio::time::timeout(Duration::from_secs(5), w.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn watch_sends_where_things_stand_first_then_what_happens() {
        let b = Breaker::new(
            Store::memory(),
            Policies::from_toml("[policies.default]\nmode = \"pause\"\nmax_tokens = 100").unwrap(),
            "http://x".into(),
        )
        .await
        .unwrap();
        // Before anyone watches: ann has a paused and an ok session, bob a paused one.
        b.record(
            vec![
                usage("ann", "p1", 150),
                usage("ann", "ok1", 10),
                usage("bob", "b1", 150),
            ],
            false,
            "",
            "",
        )
        .await
        .unwrap();
        let running = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&b))
            .await
            .unwrap();
        let mut c = BreakerClient::connect(format!("http://{}", running.addr))
            .await
            .unwrap();
        let mut ann = c
            .watch(pb::WatchRequest { user: "ann".into() })
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut ann).await;
        let (p1, _) = b.find("p1", "ann").await.unwrap();
        let paused_at = p1.history.last().unwrap().at_ms;
        assert_eq!(
            (
                first.kind.as_str(),
                first.session_id.as_str(),
                first.state.as_str(),
                first.at_unix_ms
            ),
            ("session", "p1", "paused", paused_at)
        );
        assert!(
            first.text.contains(&retort_time::human(paused_at))
                && first.confirm_url.contains("/breaker/sessions/p1"),
            "{first:?}"
        );
        // Then live alerts; ann's ok session and bob's were never sent to her.
        b.record(vec![usage("ann", "p2", 150)], false, "", "")
            .await
            .unwrap();
        let live = next(&mut ann).await;
        assert_eq!(
            (live.session_id.as_str(), live.state.as_str()),
            ("p2", "paused")
        );
        // A watcher of everyone gets every session that is not ok, then what happens next.
        let mut all = c
            .watch(pb::WatchRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut now: Vec<String> = Vec::new();
        for _ in 0..3 {
            now.push(next(&mut all).await.session_id);
        }
        now.sort();
        assert_eq!(now, ["b1", "p1", "p2"]);
        b.confirm("b1", "bob", "bob@cli").await.unwrap();
        b.record(vec![usage("bob", "b2", 150)], false, "", "")
            .await
            .unwrap();
        assert_eq!(next(&mut all).await.session_id, "b2");
        // A confirmed session is not `ok`: a new watcher hears that it was confirmed.
        let mut bob = c
            .watch(pb::WatchRequest { user: "bob".into() })
            .await
            .unwrap()
            .into_inner();
        let b1 = next(&mut bob).await;
        assert_eq!(b1.state, "confirmed");
        assert!(
            b1.text.contains("was confirmed by bob@cli at "),
            "{}",
            b1.text
        );
        running.shutdown().await;
    }
}

//! The gRPC ingress (`retort.v1.Gateway`): thin handlers that take the caller's principal (the server
//! scaffold checks the key before a call is decoded), convert the protobuf messages to the internal
//! model and call the router. Reflection and `grpc.health.v1` are served beside it by
//! `retort-server`, health tied to the gateway's real readiness.
use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use retort_proto::v1::{self as pb, gateway_server::Gateway as GatewayRpc};
use retort_server::{Grpc, Readiness};
use tonic::{Request, Response, Status};

use crate::{
    auth,
    error::ApiError,
    http::count,
    router::Gateway,
    routes::RouteKind,
    types::{
        ChatRequest, ChatResponse, FailedAttempt, Harness, Message, Part, RequestMeta, Role,
        StopReason, StreamEvent, Tool, Usage,
    },
};

/// The `ingress` label of gRPC requests in `retort_requests_total`.
const INGRESS: &str = "grpc";

pub struct GatewayService {
    gateway: Arc<Gateway>,
}

impl GatewayService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        GatewayService { gateway }
    }

    fn meta<T>(
        &self,
        req: &Request<T>,
        md: Option<&pb::RequestMetadata>,
    ) -> Result<RequestMeta, Status> {
        let identity = retort_server::auth::principal(req)?.identity.clone();
        let headers = req.metadata().clone().into_headers();
        let hint = md.map(|m| m.session_id.clone()).filter(|s| !s.is_empty());
        let harness = match md.map(|m| m.harness.as_str()).filter(|h| !h.is_empty()) {
            Some(h) => auth::harness(Some(h)),
            None => headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map_or(Harness::Sdk, |ua| auth::harness(Some(ua))),
        };
        Ok(RequestMeta {
            request_id: uuid::Uuid::new_v4().to_string(),
            identity,
            session_id: auth::session_id(&headers, hint),
            harness,
            anthropic_version: None,
            anthropic_beta: None,
        })
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::CompleteChunk, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayRpc for GatewayService {
    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let meta = self.meta(&request, request.get_ref().metadata.as_ref())?;
        let route = request.get_ref().model.clone();
        let req = to_chat_request(request.into_inner(), false).inspect_err(|_| {
            count(&self.gateway, INGRESS, "", "bad_request");
        })?;
        match self.gateway.complete(&req, &meta).await {
            Ok(resp) => {
                count(&self.gateway, INGRESS, &route, "ok");
                Ok(Response::new(from_chat_response(resp)))
            }
            Err(e) => {
                count(&self.gateway, INGRESS, &route, "error");
                Err(e.into())
            }
        }
    }

    type CompleteStreamStream = ChunkStream;

    async fn complete_stream(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let meta = self.meta(&request, request.get_ref().metadata.as_ref())?;
        let route = request.get_ref().model.clone();
        let req = to_chat_request(request.into_inner(), true).inspect_err(|_| {
            count(&self.gateway, INGRESS, "", "bad_request");
        })?;
        let mut events = Box::pin(Arc::clone(&self.gateway).stream(req, meta));
        // As over HTTP: an error before the first token is the call's status, not a stream item.
        let first = match events.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                count(&self.gateway, INGRESS, &route, "error");
                return Err(e.into());
            }
            None => {
                count(&self.gateway, INGRESS, &route, "error");
                return Err(Status::internal("the stream ended before it began"));
            }
        };
        count(&self.gateway, INGRESS, &route, "ok");
        let mut served = (String::new(), String::new());
        let head = to_chunk(first, &mut served);
        let rest = events.map(move |item| match item {
            Ok(ev) => Ok(to_chunk(ev, &mut served)),
            Err(e) => Err(Status::from(e)),
        });
        let out = futures::stream::iter([Ok(head)]).chain(rest);
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        retort_server::auth::principal(&request)?;
        let table = self.gateway.routes();
        let models = table
            .sorted()
            .into_iter()
            .map(|r| pb::ModelInfo {
                id: r.name.clone(),
                kind: r.kind.as_str().into(),
                targets: match r.kind {
                    RouteKind::Alias => r.targets.iter().map(|t| t.model.name.clone()).collect(),
                    _ => r
                        .targets
                        .iter()
                        .map(|t| format!("{}/{}", t.model.provider, t.model.upstream_model))
                        .collect(),
                },
                context_window: r
                    .targets
                    .iter()
                    .map(|t| t.model.context_window)
                    .max()
                    .unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

fn bad(msg: impl Into<String>) -> Status {
    ApiError::BadRequest(msg.into()).into()
}

fn to_chat_request(r: pb::CompleteRequest, stream: bool) -> Result<ChatRequest, Status> {
    if r.model.trim().is_empty() {
        return Err(bad("model: must name a model or alias"));
    }
    if r.messages.is_empty() {
        return Err(bad("messages: must contain at least one message"));
    }
    let mut messages: Vec<Message> = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let role = match pb::Role::try_from(m.role) {
            Ok(pb::Role::User) | Ok(pb::Role::Tool) => Role::User,
            Ok(pb::Role::Assistant) => Role::Assistant,
            _ => {
                return Err(bad(format!(
                    "messages[{i}].role: must be ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
                )));
            }
        };
        let mut parts = Vec::new();
        if !m.text.is_empty() {
            parts.push(Part::Text { text: m.text });
        }
        for (j, p) in m.parts.into_iter().enumerate() {
            parts.push(match p.part {
                Some(pb::content_part::Part::Text(text)) => Part::Text { text },
                Some(pb::content_part::Part::ToolCall(c)) => Part::ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments_json,
                },
                Some(pb::content_part::Part::ToolResult(t)) => Part::ToolResult {
                    tool_call_id: t.tool_call_id,
                    content: t.content,
                    is_error: t.is_error,
                },
                None => return Err(bad(format!("messages[{i}].parts[{j}]: empty part"))),
            });
        }
        if parts.is_empty() {
            return Err(bad(format!("messages[{i}]: has neither text nor parts")));
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => messages.push(Message { role, parts }),
        }
    }
    let mut tools = Vec::with_capacity(r.tools.len());
    for (i, t) in r.tools.into_iter().enumerate() {
        let parameters = if t.parameters_json.trim().is_empty() {
            serde_json::json!({"type": "object", "properties": {}})
        } else {
            serde_json::from_str(&t.parameters_json)
                .map_err(|e| bad(format!("tools[{i}].parameters_json: invalid JSON: {e}")))?
        };
        tools.push(Tool {
            name: t.name,
            description: Some(t.description).filter(|d| !d.is_empty()),
            parameters,
        });
    }
    let s = r.sampling.unwrap_or_default();
    if let Some(t) = s.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(bad("sampling.temperature: must be between 0 and 2"));
    }
    if let Some(p) = s.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(bad("sampling.top_p: must be between 0 and 1"));
    }
    if s.max_tokens == Some(0) {
        return Err(bad("sampling.max_tokens: must be at least 1"));
    }
    Ok(ChatRequest {
        model: r.model,
        system: Some(r.system).filter(|s| !s.is_empty()),
        messages,
        tools,
        tool_choice: None,
        max_tokens: s.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        stop: s.stop,
        reasoning_effort: None,
        stream,
        ..ChatRequest::default()
    })
}

fn usage(u: Usage) -> pb::Usage {
    pb::Usage {
        input_tokens: u.input,
        output_tokens: u.output,
        reasoning_tokens: u.reasoning,
        cached_read_tokens: u.cache_read,
        cached_write_tokens: u.cache_write,
    }
}

fn stop_reason(s: StopReason) -> i32 {
    (match s {
        StopReason::EndTurn => pb::StopReason::EndTurn,
        StopReason::MaxTokens => pb::StopReason::MaxTokens,
        StopReason::StopSequence => pb::StopReason::StopSequence,
        StopReason::ToolUse => pb::StopReason::ToolUse,
        StopReason::ContentFilter => pb::StopReason::ContentFilter,
    }) as i32
}

fn failed(f: Vec<FailedAttempt>) -> Vec<pb::FailedAttempt> {
    f.into_iter()
        .map(|f| pb::FailedAttempt {
            provider: f.provider,
            model: f.model,
            error: f.error,
            status: f.status.map_or(0, u32::from),
            duration_ms: f.duration_ms,
        })
        .collect()
}

fn from_chat_response(r: ChatResponse) -> pb::CompleteResponse {
    let text = r.text();
    let content = r
        .content
        .into_iter()
        .filter_map(|p| {
            let part = match p {
                Part::Text { text } => pb::content_part::Part::Text(text),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => pb::content_part::Part::ToolCall(pb::ToolCall {
                    id,
                    name,
                    arguments_json: arguments,
                }),
                _ => return None,
            };
            Some(pb::ContentPart { part: Some(part) })
        })
        .collect();
    pb::CompleteResponse {
        id: r.id,
        provider: r.provider,
        model: r.model,
        content,
        stop_reason: stop_reason(r.stop_reason),
        usage: Some(usage(r.usage)),
        failed_attempts: failed(r.failed_attempts),
        text,
    }
}

fn to_chunk(ev: StreamEvent, served: &mut (String, String)) -> pb::CompleteChunk {
    use pb::complete_chunk::Event;
    let event = match ev {
        StreamEvent::Start {
            id,
            provider,
            model,
        } => {
            *served = (provider.clone(), model.clone());
            Event::Start(pb::StreamStart {
                id,
                provider,
                model,
            })
        }
        StreamEvent::TextDelta { text } => Event::TextDelta(text),
        StreamEvent::ReasoningDelta { .. } | StreamEvent::ReasoningSignature { .. } => {
            Event::TextDelta(String::new())
        }
        StreamEvent::ToolCallStart { index, id, name } => Event::ToolCall(pb::ToolCallDelta {
            index,
            id,
            name,
            arguments_delta: String::new(),
        }),
        StreamEvent::ToolCallDelta { index, arguments } => Event::ToolCall(pb::ToolCallDelta {
            index,
            arguments_delta: arguments,
            ..Default::default()
        }),
        StreamEvent::Finish {
            stop_reason: s,
            usage: u,
            failed_attempts,
        } => Event::Done(pb::StreamDone {
            stop_reason: stop_reason(s),
            usage: Some(usage(u)),
            provider: served.0.clone(),
            model: served.1.clone(),
            failed_attempts: failed(failed_attempts),
        }),
    };
    pb::CompleteChunk { event: Some(event) }
}

/// Serves `retort.v1.Gateway` (and `retort.v1.Students`, with the `students` feature) on `listener`
/// until `shutdown` resolves; the server scaffold adds health and reflection and logs a failure.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Health follows readiness: SERVING while every route has a usable target and spend checks
    // are not failing closed.
    let readiness = Readiness::new(Duration::from_millis(500), {
        let gateway = Arc::clone(&gateway);
        move || {
            let closed = matches!(
                gateway.hooks.breaker.health(),
                crate::hooks::GuardHealth::FailingClosed(_)
            );
            let ready = gateway.readiness().is_ok() && !closed;
            async move { ready }
        }
    });
    let grpc = Grpc::new("gateway").authenticate(Arc::new(auth::key_ring(&gateway.cfg)));
    #[cfg(feature = "students")]
    let grpc = grpc.add_service(pb::students_server::StudentsServer::new(
        crate::students::StudentsService::new(Arc::clone(&gateway)),
    ));
    grpc.add_service(
        pb::gateway_server::GatewayServer::new(GatewayService::new(gateway))
            .max_decoding_message_size(16 << 20),
    )
    .serve(listener, readiness, shutdown)
    .await
}

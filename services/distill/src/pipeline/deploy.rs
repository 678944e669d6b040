//! Deploy: the job's student registered with the gateway's `retort.v1.Students`, then timed through
//! the gateway.
use std::{path::Path, time::Duration};

use retort_proto::v1 as pb;
use retort_training::eval;

use super::{Engine, JobSpec, JobState};
use crate::{Error, data, report::Evaluation, store::JobRow};

/// A deployed student's name: what the gateway's `local` provider accepts as a folder and model
/// name (`distilled/NAME`).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

impl Engine {
    /// Deploys the job's student through the gateway's `retort.v1.Students`, then times it through
    /// the gateway and adds that to the report.
    pub async fn deploy(&self, r: pb::DeployRequest) -> Result<pb::DeployResponse, Error> {
        let id = r.job_id.as_str();
        if !valid_name(&r.name) {
            return Err(Error::InvalidArgument(format!(
                "name {:?}: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit",
                r.name
            )));
        }
        let row = self.row(id).await?;
        if row.state != JobState::Succeeded {
            return Err(Error::FailedPrecondition(format!(
                "job {id} is {} (stage {}): only a finished job can be deployed",
                row.state, row.stage
            )));
        }
        let spec = JobSpec::parse(id, &row.request_json)?;
        let artefact = self.artefact_dir(id);
        let model = self
            .deploy_staged(&row, self.deploy_inner(id, &r, &spec, &row, &artefact))
            .await?;
        Ok(pb::DeployResponse {
            model,
            job: Some(self.job(id).await?),
        })
    }

    async fn deploy_inner(
        &self,
        id: &str,
        r: &pb::DeployRequest,
        spec: &JobSpec,
        row: &JobRow,
        artefact: &Path,
    ) -> Result<(String, String), Error> {
        let channel = tonic::transport::Endpoint::from_shared(self.cfg.gateway_grpc.clone())
            .map_err(|e| Error::Config(format!("gateway_grpc {:?}: {e}", self.cfg.gateway_grpc)))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| Error::GatewayConnect {
                addr: self.cfg.gateway_grpc.clone(),
                source,
            })?;
        let mut client = pb::students_client::StudentsClient::new(channel);
        let mut req = tonic::Request::new(pb::DeployStudentRequest {
            name: r.name.clone(),
            artefact_path: artefact.display().to_string(),
            route: r.route.clone(),
            first: r.first,
        });
        let auth = format!("Bearer {}", self.cfg.admin_key());
        if let Ok(v) = auth.parse() {
            req.metadata_mut().insert("authorization", v);
        }
        let resp = client
            .deploy_student(req)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument | tonic::Code::NotFound => Error::InvalidArgument(
                    format!("the gateway refused the student: {}", s.message()),
                ),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    Error::FailedPrecondition(format!(
                        "the gateway refused the admin key: {}",
                        s.message()
                    ))
                }
                _ => Error::Gateway(format!("DeployStudent: {}: {}", s.code(), s.message())),
            })?;
        let model = resp
            .into_inner()
            .student
            .map(|s| s.model)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("distilled/{}", r.name));
        // Latency through the gateway, with eval prompts.
        let mut summary = format!(
            "serving as {model}{}",
            if r.route.is_empty() {
                String::new()
            } else {
                format!(" (route {})", r.route)
            }
        );
        if self.cfg.gateway_latency_samples > 0 {
            let (_, evals) = self.load_items(id)?;
            let prompts: Vec<String> = evals
                .iter()
                .map(|e| data::render(&spec.template, &e.text))
                .collect();
            let mut samples = Vec::new();
            let mut errors = 0;
            for p in prompts
                .iter()
                .cycle()
                .take(self.cfg.gateway_latency_samples + 10)
                .enumerate()
            {
                match self.gateway.time_one(&model, p.1).await {
                    Ok(d) if p.0 >= 10 => samples.push(d),
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        if errors > 5 {
                            summary.push_str(&format!(
                                "; latency through the gateway not measured: {e}"
                            ));
                            break;
                        }
                    }
                }
            }
            if let Ok(stats) = eval::latency_stats(&samples) {
                summary.push_str(&format!(
                    "; through the gateway p50 {:.0} µs, p99 {:.0} µs",
                    stats.p50_us, stats.p99_us
                ));
                if let Ok(mut e) = serde_json::from_str::<Evaluation>(&row.eval_json) {
                    e.gateway_latency = Some(stats);
                    e.deployed_model = Some(model.clone());
                    let report = self.build_report(id, spec, &e);
                    self.store
                        .set_eval(id, &serde_json::to_string(&e).unwrap_or_default())
                        .await?;
                    self.store
                        .set_report(
                            id,
                            &serde_json::to_string_pretty(&report).unwrap_or_default(),
                            &report.markdown(),
                        )
                        .await?;
                }
            }
        }
        Ok((model, summary))
    }
}

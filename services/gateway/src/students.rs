//! Deployed students: the registry behind `retort.v1.Students` (deploy, undeploy, list), its record
//! on disk, and the gRPC handlers. A student is served as `distilled/NAME` by the `local` provider
//! and may be added to an alias's targets, first or last. Every change rebuilds the route table and
//! swaps it in atomically; requests in flight finish on what they started with.
//!
//! With the local provider's `dir` set, each deployed artefact is copied to `dir/artefacts/` and the
//! deployments are recorded in `dir/students.json` (replaced atomically), so a restarted gateway
//! serves the same students on the same routes.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use retort_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::{
    circuit::Circuit,
    config::{Config, ModelConfig, ProviderConfig, STUDENT_PREFIX},
    provider::local::{LoadedStudent, Local},
    router::Gateway,
    routes::{StudentRoute, Target},
};

const REGISTRY: &str = "students.json";
const ARTEFACTS: &str = "artefacts";
/// Students truncate their input themselves; the router must never skip one for a long prompt.
const STUDENT_CONTEXT_WINDOW: u32 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum StudentError {
    #[error(
        "this gateway has no provider of kind `local`; add `[providers.local] kind = \"local\"` to its configuration to serve students"
    )]
    NoLocalProvider,
    #[error(
        "name {0:?} is invalid: use 1 to 63 characters from a-z, 0-9, `_` and `-`, starting with a letter or digit"
    )]
    BadName(String),
    #[error(
        "artefact_path is required: the directory of a trained student (metadata.json and model.mpk)"
    )]
    MissingPath,
    #[error("route {route:?} is not an alias of this gateway (aliases: {known})")]
    UnknownRoute { route: String, known: String },
    // These two also print their cause: the gRPC status a caller gets carries only the message.
    #[error("cannot load the artefact at {path}: {source}")]
    Artefact {
        path: String,
        #[source]
        source: ArtefactError,
    },
    #[error("student {0:?} is not deployed")]
    NotDeployed(String),
    #[error("cannot record the deployment in {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a student artefact could not be made ready to serve.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    #[error("no metadata.json there: not a student artefact")]
    NotAnArtefact,
    #[error("cannot copy it to {to}: {source}")]
    Copy {
        to: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] retort_training::TrainingError),
    #[error("the loading task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl From<StudentError> for Status {
    fn from(e: StudentError) -> Status {
        let msg = e.to_string();
        match e {
            StudentError::NoLocalProvider => Status::failed_precondition(msg),
            StudentError::NotDeployed(_) => Status::not_found(msg),
            StudentError::Store { .. } => Status::internal(msg),
            _ => Status::invalid_argument(msg),
        }
    }
}

/// One deployment as recorded in `students.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    /// Where the artefact was deployed from.
    artefact_path: String,
    /// The copy that is served (under `dir/artefacts/`), when the provider has a `dir`.
    stored_path: Option<PathBuf>,
    route: Option<String>,
    first: bool,
    deployed_at_ms: i64,
}

struct Deployed {
    record: Record,
    target: Arc<Target>,
    student: Arc<LoadedStudent>,
    /// Deploy order, for the order of several students put on one alias.
    seq: u64,
}

/// The deployed students of a gateway's `local` provider.
pub struct Students {
    provider: String,
    local: Arc<Local>,
    dir: Option<PathBuf>,
    circuit: crate::config::CircuitConfig,
    deployed: Mutex<BTreeMap<String, Deployed>>,
    /// Serialises deploys and undeploys (the slow part, loading, runs before it is taken).
    ops: tokio::sync::Mutex<u64>,
}

/// A deploy request.
#[derive(Debug, Clone, Default)]
pub struct Deploy {
    pub name: String,
    pub artefact_path: String,
    pub route: Option<String>,
    pub first: bool,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// `class/size` of an artefact: the named size whose config it matches, else `class/custom`.
fn spec_name(meta: &retort_training::ArtefactMetadata) -> String {
    let class = meta.config.class();
    let actual = serde_json::to_value(&meta.config).ok();
    for size in retort_training::StudentClass::SIZES {
        let spec = retort_training::StudentSpec {
            class,
            size: size.to_owned(),
        };
        if let Ok(c) = spec.config(meta.labels.len())
            && serde_json::to_value(&c).ok() == actual
        {
            return spec.to_string();
        }
    }
    format!("{class}/custom")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

impl Students {
    /// The students recorded in the provider's `dir` (none without one), loaded and ready. A record
    /// that no longer loads, or whose alias is gone, is logged and left out; nothing here fails.
    pub fn restore(cfg: &ProviderConfig, local: Arc<Local>, gateway: &Config) -> Students {
        let students = Students {
            provider: cfg.name.clone(),
            local,
            dir: cfg.dir.clone(),
            circuit: gateway.circuit,
            deployed: Mutex::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(0),
        };
        let Some(dir) = &students.dir else {
            return students;
        };
        let path = dir.join(REGISTRY);
        let records: Vec<Record> = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot parse the deployed students; serving none");
                    return students;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return students,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the deployed students; serving none");
                return students;
            }
        };
        let mut seq = 0;
        let mut map = BTreeMap::new();
        for mut record in records {
            let from = record
                .stored_path
                .clone()
                .unwrap_or_else(|| PathBuf::from(&record.artefact_path));
            let student = match Local::load(&from) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!(student = %record.name, path = %from.display(), error = %e, "cannot load a deployed student; not serving it");
                    continue;
                }
            };
            if let Some(route) = &record.route
                && !gateway.aliases.contains_key(route)
            {
                tracing::warn!(student = %record.name, %route, "the route a student was added to is gone; serving it without");
                record.route = None;
            }
            seq += 1;
            let d = students.deployed_entry(record, student, seq);
            students
                .local
                .insert(&d.target.model.name, Arc::clone(&d.student));
            tracing::info!(student = %d.record.name, "restored a deployed student");
            map.insert(d.record.name.clone(), d);
        }
        if let Ok(mut g) = students.deployed.lock() {
            *g = map;
        }
        if let Ok(mut g) = students.ops.try_lock() {
            *g = seq;
        }
        students
    }

    fn deployed_entry(&self, record: Record, student: Arc<LoadedStudent>, seq: u64) -> Deployed {
        let name = format!("{STUDENT_PREFIX}{}", record.name);
        let model = ModelConfig {
            name: name.clone(),
            provider: self.provider.clone(),
            upstream_model: name,
            context_window: STUDENT_CONTEXT_WINDOW,
            prefill: false,
        };
        let target = Arc::new(Target {
            model,
            circuit: Arc::new(Circuit::new(self.circuit)),
        });
        Deployed {
            record,
            target,
            student,
            seq,
        }
    }

    /// The students as the route table needs them, in deploy order.
    pub fn routes(&self) -> Vec<StudentRoute> {
        let Ok(g) = self.deployed.lock() else {
            return Vec::new();
        };
        let mut v: Vec<(&Deployed, StudentRoute)> = g
            .values()
            .map(|d| {
                (
                    d,
                    StudentRoute {
                        target: Arc::clone(&d.target),
                        alias: d.record.route.clone().map(|r| (r, d.record.first)),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(d, _)| d.seq);
        v.into_iter().map(|(_, r)| r).collect()
    }

    /// Every deployed student, by name.
    pub fn list(&self) -> Vec<pb::StudentInfo> {
        let Ok(g) = self.deployed.lock() else {
            return Vec::new();
        };
        g.values().map(info).collect()
    }

    fn persist(&self, map: &BTreeMap<String, Deployed>) -> Result<(), StudentError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(REGISTRY);
        let store_err = |e: Box<dyn std::error::Error + Send + Sync>| StudentError::Store {
            path: path.display().to_string(),
            source: e,
        };
        let mut records: Vec<&Deployed> = map.values().collect();
        records.sort_by_key(|d| d.seq);
        let records: Vec<&Record> = records.into_iter().map(|d| &d.record).collect();
        let text = serde_json::to_string_pretty(&records).map_err(|e| store_err(e.into()))?;
        std::fs::create_dir_all(dir).map_err(|e| store_err(e.into()))?;
        let tmp = dir.join(format!("{REGISTRY}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| store_err(e.into()))?;
        std::fs::rename(&tmp, &path).map_err(|e| store_err(e.into()))
    }
}

fn info(d: &Deployed) -> pb::StudentInfo {
    let meta = d.student.metadata();
    pb::StudentInfo {
        model: d.target.model.name.clone(),
        name: d.record.name.clone(),
        artefact_path: d.record.artefact_path.clone(),
        student: spec_name(meta),
        labels: meta.labels.labels().to_vec(),
        parameters: meta.num_params as u64,
        routes: d.record.route.iter().cloned().collect(),
        deployed_at_ms: d.record.deployed_at_ms,
    }
}

/// Deploys (or replaces) a student; see `retort.v1.Students/DeployStudent`.
pub async fn deploy(gateway: &Gateway, req: Deploy) -> Result<pb::StudentInfo, StudentError> {
    let students = gateway
        .students
        .as_ref()
        .ok_or(StudentError::NoLocalProvider)?;
    if !valid_name(&req.name) {
        return Err(StudentError::BadName(req.name));
    }
    if req.artefact_path.trim().is_empty() {
        return Err(StudentError::MissingPath);
    }
    let route = req.route.filter(|r| !r.trim().is_empty());
    if let Some(r) = &route
        && !gateway.cfg.aliases.contains_key(r)
    {
        let known: Vec<&str> = gateway.cfg.aliases.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        return Err(StudentError::UnknownRoute {
            route: r.clone(),
            known,
        });
    }
    let deployed_at_ms = retort_time::now_ms();
    let source = PathBuf::from(&req.artefact_path);
    let stored = students.dir.as_ref().map(|d| {
        d.join(ARTEFACTS)
            .join(format!("{}-{deployed_at_ms}", req.name))
    });
    // Copy (when recording) and load off the async workers: file I/O and a few timed predictions.
    let loaded = {
        let (source, stored) = (source.clone(), stored.clone());
        tokio::task::spawn_blocking(move || -> Result<LoadedStudent, ArtefactError> {
            let serve_from = match &stored {
                Some(to) => {
                    if !source.join("metadata.json").is_file() {
                        return Err(ArtefactError::NotAnArtefact);
                    }
                    copy_dir(&source, to).map_err(|source| ArtefactError::Copy {
                        to: to.display().to_string(),
                        source,
                    })?;
                    to.clone()
                }
                None => source.clone(),
            };
            let loaded = Local::load(&serve_from).map_err(ArtefactError::from);
            if loaded.is_err()
                && let Some(to) = &stored
            {
                let _ = std::fs::remove_dir_all(to);
            }
            loaded
        })
        .await
        .map_err(ArtefactError::Task)
        .and_then(|r| r)
        .map_err(|source| StudentError::Artefact {
            path: req.artefact_path.clone(),
            source,
        })?
    };
    let student = Arc::new(loaded);
    let mut seq = students.ops.lock().await;
    *seq += 1;
    let record = Record {
        name: req.name.clone(),
        artefact_path: req.artefact_path.clone(),
        stored_path: stored.clone(),
        route,
        first: req.first,
        deployed_at_ms,
    };
    let d = students.deployed_entry(record, Arc::clone(&student), *seq);
    let model = d.target.model.name.clone();
    let (info, old) = {
        let mut g = students.deployed.lock().map_err(|_| StudentError::Store {
            path: "(memory)".into(),
            source: "poisoned lock".into(),
        })?;
        let info = info(&d);
        let old = g.insert(req.name.clone(), d);
        if let Err(e) = students.persist(&g) {
            // Put back what was there: nothing changed.
            match old {
                Some(o) => {
                    g.insert(req.name.clone(), o);
                }
                None => {
                    g.remove(&req.name);
                }
            }
            if let Some(s) = &stored {
                let _ = std::fs::remove_dir_all(s);
            }
            return Err(e);
        }
        (info, old)
    };
    students.local.insert(&model, student);
    gateway.rebuild_routes();
    if let Some(old) = old
        && let Some(p) = old.record.stored_path
        && Some(&p) != stored.as_ref()
    {
        let _ = std::fs::remove_dir_all(p);
    }
    tracing::info!(student = %req.name, model = %model, "deployed a student");
    Ok(info)
}

/// Stops serving a student and takes it off its route.
pub async fn undeploy(gateway: &Gateway, name: &str) -> Result<(), StudentError> {
    let students = gateway
        .students
        .as_ref()
        .ok_or(StudentError::NoLocalProvider)?;
    let _ops = students.ops.lock().await;
    let removed = {
        let mut g = students.deployed.lock().map_err(|_| StudentError::Store {
            path: "(memory)".into(),
            source: "poisoned lock".into(),
        })?;
        let removed = g
            .remove(name)
            .ok_or_else(|| StudentError::NotDeployed(name.to_owned()))?;
        if let Err(e) = students.persist(&g) {
            g.insert(name.to_owned(), removed);
            return Err(e);
        }
        removed
    };
    gateway.rebuild_routes();
    students.local.remove(&removed.target.model.name);
    if let Some(p) = removed.record.stored_path {
        let _ = std::fs::remove_dir_all(p);
    }
    tracing::info!(student = %name, "undeployed a student");
    Ok(())
}

/// `retort.v1.Students`, for admins only.
pub struct StudentsService {
    gateway: Arc<Gateway>,
}

impl StudentsService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        StudentsService { gateway }
    }

    fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if retort_server::auth::principal(req)?.is_admin() {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "managing students needs the key of a gateway user with `admin = true`",
            ))
        }
    }
}

#[tonic::async_trait]
impl pb::students_server::Students for StudentsService {
    async fn deploy_student(
        &self,
        request: Request<pb::DeployStudentRequest>,
    ) -> Result<Response<pb::DeployStudentResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let req = Deploy {
            name: r.name,
            artefact_path: r.artefact_path,
            route: Some(r.route),
            first: r.first,
        };
        let student = deploy(&self.gateway, req).await?;
        Ok(Response::new(pb::DeployStudentResponse {
            student: Some(student),
        }))
    }

    async fn undeploy_student(
        &self,
        request: Request<pb::UndeployStudentRequest>,
    ) -> Result<Response<pb::UndeployStudentResponse>, Status> {
        self.admin(&request)?;
        undeploy(&self.gateway, &request.into_inner().name).await?;
        Ok(Response::new(pb::UndeployStudentResponse {}))
    }

    async fn list_students(
        &self,
        request: Request<pb::ListStudentsRequest>,
    ) -> Result<Response<pb::ListStudentsResponse>, Status> {
        self.admin(&request)?;
        let students = self
            .gateway
            .students
            .as_ref()
            .map(Students::list)
            .unwrap_or_default();
        Ok(Response::new(pb::ListStudentsResponse { students }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["spam", "a", "spam-v2_1", "0x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Spam", "-a", "_a", "a/b", "a b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

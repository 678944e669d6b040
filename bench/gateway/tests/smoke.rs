//! Runs every scenario of the gateway benchmark at smoke size, so the bench cannot rot: the
//! simulator and the gateway in-process (through their libraries), the floor as the built binary.
//! Asserts only that every scenario produced numbers — never timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use retort_bench_gateway::{
    configs, procs,
    report::{self, Meta},
    scenarios::{self, Plan, Setup, System, SystemKind},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_produces_numbers() {
    let sim = retort_sim::spawn(
        retort_sim::SimConfig::from_toml(&configs::sim_toml()).expect("sim config"),
    )
    .await
    .expect("sim");
    let cfg = retort_gateway::config::Config::from_toml(&configs::retort_toml(
        &sim.base_url(),
        "127.0.0.1:0",
        "127.0.0.1:0",
    ))
    .expect("gateway config");
    let gw = retort_gateway::start(cfg).await.expect("gateway");

    let tmp = std::env::temp_dir().join(format!("retort-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let floor_port = procs::free_port().unwrap();
    let floor_url = format!("http://127.0.0.1:{floor_port}");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_floor"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{floor_port}"))
        .arg("--upstream")
        .arg(sim.base_url());
    let mut floor = procs::Child::spawn("floor", cmd, &tmp.join("floor.log"), false).unwrap();
    procs::wait_ready(&mut floor, &floor_url, "/healthz", Duration::from_secs(30))
        .await
        .unwrap();

    let me = std::process::id();
    let setup = Setup {
        systems: vec![
            System {
                kind: SystemKind::Direct,
                base_url: sim.base_url(),
                key: None,
                pid: None,
                pgid: None,
            },
            System {
                kind: SystemKind::Floor,
                base_url: floor_url,
                key: None,
                pid: floor.pid(),
                pgid: None,
            },
            System {
                kind: SystemKind::Retort,
                base_url: format!("http://{}", gw.http_addr),
                key: Some(configs::RETORT_KEY.to_owned()),
                pid: Some(me),
                pgid: None,
            },
        ],
        retort_grpc_url: Some(format!("http://{}", gw.grpc_addr)),
    };
    let plan = Plan::smoke();
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        scenarios::run(&setup, &plan, &|m| eprintln!("{m}")),
    )
    .await
    .expect("the smoke run took too long")
    .expect("smoke run");
    floor.stop().await;

    let kinds = [SystemKind::Direct, SystemKind::Floor, SystemKind::Retort];
    for k in kinds {
        let l = r
            .latency
            .iter()
            .find(|x| x.system == k)
            .expect("latency row");
        assert_eq!(l.errors, 0, "{k:?}: {:?}", l.first_error);
        assert_eq!(l.latency.count, plan.latency_requests, "{k:?}");
        assert!(l.latency.p99_us > 0.0);

        let t = r
            .throughput
            .iter()
            .find(|x| x.system == k)
            .expect("throughput row");
        assert_eq!(t.errors, 0, "{k:?}: {:?}", t.first_error);
        assert!(t.ok > 0 && t.rps > 0.0, "{k:?}");

        let t = r
            .peak
            .iter()
            .find(|x| x.system == k)
            .expect("peak throughput row");
        assert_eq!(t.errors, 0, "{k:?}: {:?}", t.first_error);
        assert!(t.ok > 0 && t.rps > 0.0, "{k:?}");

        let s = r
            .streaming
            .iter()
            .find(|x| x.system == k)
            .expect("streaming row");
        assert_eq!(s.errors, 0, "{k:?}: {:?}", s.first_error);
        assert_eq!(s.ttft.count, plan.stream_requests, "{k:?}");
        assert_eq!((s.min_tokens, s.max_tokens), (64, 64), "{k:?}");

        let s = r
            .paced
            .iter()
            .find(|x| x.system == k)
            .expect("paced streaming row");
        assert_eq!(s.errors, 0, "{k:?}: {:?}", s.first_error);
        assert_eq!(s.ttft.count, plan.paced_requests, "{k:?}");
        assert_eq!((s.min_tokens, s.max_tokens), (8, 8), "{k:?}");
    }
    let g = r.grpc.as_ref().expect("gRPC row");
    assert_eq!(g.run.errors, 0, "{:?}", g.run.first_error);
    assert!(g.run.ok > 0);
    assert!(
        r.idle_rss_kib.contains_key(&SystemKind::Retort)
            && r.idle_rss_kib.contains_key(&SystemKind::Floor)
    );
    let soak = r.soak.as_ref().expect("soak");
    assert!(!soak.samples.is_empty() && soak.peak_kib > 0);
    assert!(
        soak.max_active > 0,
        "no stream was ever open during the soak"
    );
    assert_eq!(soak.errors, 0, "{:?}", soak.first_error);

    // The report renders every system and every target.
    let targets = report::targets(&r);
    assert!(targets.len() >= 9);
    let meta = Meta {
        date: report::utc(0),
        nproc: 1,
        cpu_model: "test".into(),
        mem_total_mib: 1,
        kernel: "test".into(),
        rustc: "test".into(),
        litellm: None,
        git_rev: None,
        smoke: true,
        notes: vec![],
    };
    let md = report::markdown(&meta, &r, &targets, "gateway-smoke.json");
    for k in kinds {
        assert!(
            md.contains(&format!("| {} |", k.name())),
            "{k:?} missing from the report"
        );
    }
    assert!(md.contains("1970-01-01 00:00:00"));
    serde_json::to_string(&report::Raw {
        meta: &meta,
        targets: &targets,
        results: &r,
    })
    .unwrap();

    let _ = tokio::time::timeout(Duration::from_secs(10), gw.shutdown()).await;
    let _ = std::fs::remove_dir_all(&tmp);
}

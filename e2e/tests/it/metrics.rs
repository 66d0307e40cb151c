//! Metrics: every service serves Prometheus text on `/metrics`, and every metric the shipped
//! Grafana dashboard (`deploy/grafana/jetmail.json`) queries is exposed by one of them once
//! a campaign went through (submitted over ingest's API, delivered by a sender).

use std::collections::BTreeSet;
use std::time::Duration;

use jetmail_testkit::{free_port, wait_for, Service, Stack};

const DASHBOARD: &str = include_str!("../../../deploy/grafana/jetmail.json");

/// The metric names a dashboard's PromQL expressions use (`jetmail_…` identifiers).
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("jetmail_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// The metric names a scrape exposes (sample lines, not `# HELP`/`# TYPE`).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed() -> anyhow::Result<()> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD)?;
    let wanted = dashboard_metrics(&dashboard);
    assert!(wanted.len() >= 10, "{wanted:?}");

    let mut stack = Stack::start(0, &[]).await?;
    let sender_port = free_port();
    let listen = format!("127.0.0.1:{sender_port}");
    stack.spawn_sender("s1", &["--metrics-listen", &listen])?;
    let ingest_port = free_port();
    let mut args = stack.nats.service_args("ingest");
    args.extend([
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{ingest_port}"),
        "--insecure-no-auth".into(),
    ]);
    let _ingest = Service::spawn("ingest", "jetmail-ingest", &args, &[], stack.dir.path())?;
    let webui_port = free_port();
    let mut args = stack.nats.service_args("webui");
    args.extend([
        "--ingest-url".into(),
        format!("http://127.0.0.1:{ingest_port}"),
        "--listen".into(),
        format!("127.0.0.1:{webui_port}"),
    ]);
    // Bound (not `_`) so it lives to the end: a Service is killed when dropped.
    let _webui = Service::spawn(
        "webui",
        "jetmail-webui",
        &args,
        &[("JETMAIL_WEBUI_PASSWORD", "metrics-test-password")],
        stack.dir.path(),
    )?;
    let ports = [
        ("sender", sender_port),
        ("ingest", ingest_port),
        ("monitor", stack.monitor_port),
        ("webui", webui_port),
    ];
    for (name, port) in ports {
        wait_for(
            &format!("{name}'s /metrics"),
            Duration::from_secs(20),
            || jetmail_testkit::http_request(port, "GET", "/metrics", ""),
        )
        .await?;
    }

    // A campaign through ingest's API, delivered by the sender.
    let campaign = serde_json::json!({
        "from": "news@example.com", "subject": "Hi", "text": "Hello",
        "recipients": ["a@example.com", "b@example.com", "c@example.com"],
        "campaign_id": "metrics",
    });
    jetmail_testkit::http_request(ingest_port, "POST", "/v1/campaigns", &campaign.to_string())
        .await
        .expect("the submit is accepted");
    assert_eq!(
        stack
            .wait_done("metrics", Duration::from_secs(30))
            .await?
            .sent,
        3
    );

    // Scraped until every dashboard metric shows up (the monitor refreshes every 5 s).
    let missing = wait_for(
        "every dashboard metric",
        Duration::from_secs(20),
        || async {
            let mut all = BTreeSet::new();
            for (_, port) in ports {
                all.extend(exposed(
                    &jetmail_testkit::http_request(port, "GET", "/metrics", "").await?,
                ));
            }
            let missing: Vec<&String> = wanted.iter().filter(|m| !all.contains(*m)).collect();
            missing.is_empty().then_some(all)
        },
    )
    .await;
    let all = match missing {
        Ok(all) => all,
        Err(e) => {
            let mut all = BTreeSet::new();
            for (_, port) in ports {
                all.extend(exposed(
                    &jetmail_testkit::http_request(port, "GET", "/metrics", "")
                        .await
                        .unwrap_or_default(),
                ));
            }
            let missing: Vec<&String> = wanted.iter().filter(|m| !all.contains(*m)).collect();
            return Err(e.context(format!("not exposed: {missing:?}")));
        }
    };
    // Every metric common::metrics names is known to the dashboard or at least exposed.
    for name in jetmail_common::metrics::ALL {
        assert!(
            all.iter().any(|m| m.starts_with(name)),
            "{name} is not exposed"
        );
    }
    // Labels stay bounded: no campaign id and no address anywhere in the text.
    for (name, port) in ports {
        let text = jetmail_testkit::http_request(port, "GET", "/metrics", "")
            .await
            .unwrap();
        assert!(
            !text.contains("example.com") && !text.contains("\"metrics\""),
            "{name}: {text}"
        );
    }
    println!(
        "METRICS {} dashboard metrics, {} exposed in all",
        wanted.len(),
        all.len()
    );
    Ok(())
}

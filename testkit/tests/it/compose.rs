//! compose.yaml cannot be run here (no Docker engine), so it is checked against the code: every
//! service built from our image runs a binary of this workspace, and every flag and
//! `JETMAIL_*` variable it sets is one that binary documents in its `--help`.

use std::process::Command;

use jetmail_testkit::bin_path;

fn help(bin: &str, subcommand: &[String]) -> String {
    let out = Command::new(bin_path(bin).expect("workspace binary"))
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} {subcommand:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_compose_service_runs_a_real_binary_with_flags_it_accepts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose.yaml");
    let text = std::fs::read_to_string(path).expect("compose.yaml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml is YAML");
    doc.apply_merge().expect("merge keys");
    let services = doc["services"].as_mapping().expect("services");
    let mut checked = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let Some(command) = svc.get("command").and_then(|c| c.as_sequence()) else {
            continue;
        };
        let argv: Vec<String> = command
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        if !argv[0].starts_with("jetmail-") {
            assert!(
                svc.get("image").is_some(),
                "{name}: not our binary and no image"
            );
            continue;
        }
        // Subcommands are the leading words before the first flag.
        let subcommand: Vec<String> = argv[1..]
            .iter()
            .take_while(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        let help = help(&argv[0], &subcommand);
        for flag in argv.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(flag),
                "{name}: {} does not accept {flag}",
                argv[0]
            );
        }
        if let Some(env) = svc.get("environment").and_then(|e| e.as_mapping()) {
            for key in env.keys() {
                let key = key.as_str().unwrap();
                if key.starts_with("JETMAIL_") && key != "JETMAIL_LOG" {
                    assert!(
                        help.contains(key),
                        "{name}: {} does not read {key}",
                        argv[0]
                    );
                }
            }
        }
        checked.push(name.to_string());
    }
    for expected in ["smtp-sink", "ingest", "sender", "monitor", "webui"] {
        assert!(
            checked.iter().any(|c| c == expected),
            "compose.yaml has no {expected} service"
        );
    }
}

#[test]
fn nats_conf_enables_jetstream_with_a_store_and_monitoring() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../nats.conf")).unwrap();
    assert!(text.contains("jetstream {"));
    assert!(text.contains("store_dir:"));
    assert!(text.contains("http: 0.0.0.0:8222"));
}

fn compose() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose.yaml");
    let text = std::fs::read_to_string(path).expect("compose.yaml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml is YAML");
    doc.apply_merge().expect("merge keys");
    doc
}

#[test]
fn compose_publishes_only_the_web_ui_and_the_unsubscribe_port_checks_health_and_passes_secrets_as_files(
) {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let declared = doc["secrets"].as_mapping().expect("top-level secrets");
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let ports = svc.get("ports").and_then(|p| p.as_sequence());
        // The web UI, and ingest's public listener (the unsubscribe routes) alone: never the
        // API (8080), NATS or its monitoring.
        let published: Vec<&str> = ports
            .map(|p| p.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        match name {
            "webui" => assert_eq!(published, ["8090:8090"], "webui publishes its port"),
            "ingest" => assert_eq!(
                published,
                ["8091:8091"],
                "ingest publishes its public port only"
            ),
            _ => assert!(published.is_empty(), "{name} publishes a port"),
        }
        assert!(
            svc.get("healthcheck").is_some(),
            "{name} has no health check"
        );
        for s in svc
            .get("secrets")
            .and_then(|s| s.as_sequence())
            .into_iter()
            .flatten()
        {
            assert!(
                declared.contains_key(s.as_str().unwrap()),
                "{name}: secret {s:?} not declared"
            );
        }
        let env = svc.get("environment").and_then(|e| e.as_mapping());
        for (key, value) in env.into_iter().flatten() {
            let key = key.as_str().unwrap();
            assert!(
                !(key.contains("PASSWORD") || key.contains("TOKEN")) || key.ends_with("_FILE"),
                "{name}: secret {key} passed in the environment, not as a file"
            );
            if key.ends_with("_FILE") {
                let file = value.as_str().unwrap();
                let secret = file.strip_prefix("/run/secrets/").expect("a secret's path");
                let mine = svc["secrets"].as_sequence().expect("secrets");
                assert!(
                    mine.iter().any(|s| s.as_str() == Some(secret)),
                    "{name}: {key} names {secret}, which it is not given"
                );
            }
        }
    }
    // The NATS server gets one password secret per user of nats.conf.
    let nats_conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../nats.conf")).unwrap();
    let nats_secrets = doc["services"]["nats"]["secrets"]
        .as_sequence()
        .expect("nats secrets");
    for user in jetmail_testkit::NATS_USERS {
        let var = format!("$JETMAIL_NATS_{}_PASSWORD", user.to_uppercase());
        assert!(nats_conf.contains(&var), "nats.conf has no {var}");
        let secret = format!("nats_{user}_password");
        assert!(
            nats_secrets
                .iter()
                .any(|s| s.as_str() == Some(secret.as_str())),
            "the nats service is not given {secret}"
        );
    }
}

/// Every stream and bucket the topology owns is named in nats.conf's grants: a new one
/// must be given to the services that create or use it.
#[test]
fn nats_conf_grants_name_every_stream_and_bucket() {
    use jetmail_common::topology as t;
    let nats_conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../nats.conf")).unwrap();
    let streams = [
        t::OUTBOX_STREAM,
        t::HELD_STREAM,
        t::EVENTS_STREAM,
        t::DEAD_STREAM,
        t::ADVISORIES_STREAM,
    ];
    for s in streams {
        assert!(
            nats_conf.contains(&format!("\"$JS.API.STREAM.CREATE.{s}\"")),
            "nats.conf never grants creating {s}"
        );
    }
    for b in [
        t::CAMPAIGNS_BUCKET,
        t::SENDERS_BUCKET,
        t::ATTEMPTS_BUCKET,
        t::LIMITS_BUCKET,
        t::SUPPRESSIONS_BUCKET,
    ] {
        assert!(
            nats_conf.contains(&format!("\"$JS.API.STREAM.CREATE.KV_{b}\"")),
            "nats.conf never grants creating the bucket {b}"
        );
        assert!(
            nats_conf.contains(&format!("\"$KV.{b}.>\"")),
            "nats.conf never grants writing the bucket {b}"
        );
    }
}

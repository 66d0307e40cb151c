//! compose.yaml checked against the code, without Docker: every service built from our image
//! runs a binary of this workspace, and every flag and `JETMAIL_*` variable it sets (in
//! compose.yaml and in the cluster override deploy/cluster/compose.yaml) is one that binary
//! documents in its `--help`. scripts/test-compose.sh runs the same file under Docker.

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

/// The `--help` of the workspace binary a service's `command` runs (with its subcommand), or
/// `None` when the service runs something else.
fn service_help(svc: &serde_yaml::Value) -> Option<(String, String)> {
    let command = svc.get("command")?.as_sequence()?;
    let argv: Vec<String> = command
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    if !argv[0].starts_with("jetmail-") {
        return None;
    }
    // Subcommands are the leading words before the first flag.
    let subcommand: Vec<String> = argv[1..]
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    Some((argv[0].clone(), help(&argv[0], &subcommand)))
}

/// Every `JETMAIL_*` variable of `svc`'s environment is one `bin` reads.
fn assert_reads_its_environment(name: &str, svc: &serde_yaml::Value, bin: &str, help: &str) {
    if let Some(env) = svc.get("environment").and_then(|e| e.as_mapping()) {
        for key in env.keys() {
            let key = key.as_str().unwrap();
            if key.starts_with("JETMAIL_") && key != "JETMAIL_LOG" {
                assert!(help.contains(key), "{name}: {bin} does not read {key}");
            }
        }
    }
}

#[test]
fn every_compose_service_runs_a_real_binary_with_flags_it_accepts() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let mut checked = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        if svc.get("command").is_none() {
            continue;
        }
        let Some((bin, help)) = service_help(svc) else {
            assert!(
                svc.get("image").is_some(),
                "{name}: not our binary and no image"
            );
            continue;
        };
        let command = svc["command"].as_sequence().unwrap();
        for flag in command
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| a.starts_with("--"))
        {
            let flag = flag.split('=').next().unwrap();
            assert!(help.contains(flag), "{name}: {bin} does not accept {flag}");
        }
        assert_reads_its_environment(name, svc, &bin, &help);
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

/// A compose file of the repository, its merge keys applied.
fn compose_file(path: &str) -> serde_yaml::Value {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).expect(path);
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose file is YAML");
    doc.apply_merge().expect("merge keys");
    doc
}

fn compose() -> serde_yaml::Value {
    compose_file("compose.yaml")
}

/// A published port `HOST:CONTAINER` whose host side is `DEFAULT` or `${VARIABLE:-DEFAULT}`
/// (so a test can pick a free one): the container port and the default host port.
fn published_port(spec: &str) -> (u16, u16) {
    let (host, container) = spec.rsplit_once(':').expect("HOST:CONTAINER");
    let host = match host.strip_prefix("${") {
        Some(var) => {
            let (name, default) = var
                .strip_suffix('}')
                .and_then(|v| v.split_once(":-"))
                .expect("${VARIABLE:-DEFAULT}");
            assert!(name.starts_with("JETMAIL_"), "{spec}: a JETMAIL_ variable");
            default
        }
        None => host,
    };
    (
        container.parse().expect("container port"),
        host.parse()
            .expect("a port, never an address: publish on every interface or none"),
    )
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
        let published: Vec<(u16, u16)> = ports
            .map(|p| {
                p.iter()
                    .filter_map(|p| p.as_str())
                    .map(published_port)
                    .collect()
            })
            .unwrap_or_default();
        match name {
            "webui" => assert_eq!(published, [(8090, 8090)], "webui publishes its port"),
            "ingest" => assert_eq!(
                published,
                [(8091, 8091)],
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

/// The images come from variables whose defaults are the public ones, so the file tested
/// under Docker with local images (scripts/test-compose.sh) is the file that ships.
#[test]
fn compose_images_are_variables_with_public_defaults() {
    let doc = compose();
    for (name, svc) in doc["services"].as_mapping().expect("services") {
        let name = name.as_str().unwrap();
        let image = svc["image"]
            .as_str()
            .expect("every service names its image");
        if name.starts_with("nats") {
            assert_eq!(image, "${JETMAIL_NATS_IMAGE:-nats:2.11-alpine}", "{name}");
        } else {
            assert_eq!(image, "${JETMAIL_IMAGE:-jetmail:latest}", "{name}");
            assert_eq!(
                svc["build"]["args"]["BASE_IMAGE"].as_str(),
                Some("${JETMAIL_BASE_IMAGE:-debian:bookworm-slim}"),
                "{name}: built on the base image users pull"
            );
        }
    }
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).unwrap();
    assert!(dockerfile.contains("ARG BASE_IMAGE=debian:bookworm-slim\nFROM ${BASE_IMAGE}\n"));
}

/// deploy/cluster/compose.yaml moves compose.yaml's services onto the cluster profile's
/// nodes: each service it names exists and reads every variable it sets, the CA it names is
/// a secret it is given, and it waits for every node.
#[test]
fn the_cluster_override_points_real_services_at_every_node() {
    let base = compose();
    let over = compose_file("deploy/cluster/compose.yaml");
    let declared = base["secrets"].as_mapping().expect("top-level secrets");
    let nodes: Vec<&str> = base["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, svc)| {
            svc.get("profiles")
                .and_then(|p| p.as_sequence())
                .is_some_and(|p| p.iter().any(|p| p.as_str() == Some("cluster")))
        })
        .map(|(name, _)| name.as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["nats-1", "nats-2", "nats-3"]);
    let services = over["services"].as_mapping().expect("services");
    for name in ["ingest", "sender", "monitor", "webui"] {
        let svc = services
            .get(name)
            .unwrap_or_else(|| panic!("{name} not moved"));
        let (bin, help) = service_help(&base["services"][name]).expect("a workspace binary");
        assert_reads_its_environment(name, svc, &bin, &help);
        let env = &svc["environment"];
        let urls = env["JETMAIL_NATS_URL"].as_str().unwrap();
        for node in &nodes {
            assert!(
                urls.contains(&format!("tls://{node}:4222")),
                "{name}: {urls}"
            );
            assert!(
                svc["depends_on"].get(*node).is_some(),
                "{name} does not wait for {node}"
            );
        }
        assert_eq!(env["JETMAIL_REPLICAS"].as_str(), Some("3"));
        let ca = env["JETMAIL_NATS_TLS_CA"].as_str().unwrap();
        let secret = ca
            .strip_prefix("/run/secrets/")
            .expect("the CA is a secret");
        assert!(declared.contains_key(secret), "{secret} not declared");
        assert!(
            svc["secrets"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|s| s.as_str() == Some(secret)),
            "{name} is not given {secret}"
        );
    }
}

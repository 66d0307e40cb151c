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

//! URL and credential handling: what the services are given, what the client sees, what
//! is printed.

use super::*;
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
}

fn args(argv: &[&str]) -> NatsArgs {
    Cli::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))
        .expect("parse")
        .nats
}

#[test]
fn a_password_in_a_url_becomes_credentials_and_leaves_the_url() {
    let a = args(&[
        "--nats-url",
        "nats://ingest:s%40cret-1@h1:4222, tls://ingest:s%40cret-1@h2",
    ]);
    let t = a.target().unwrap();
    assert_eq!(t.urls(), "nats://h1:4222,tls://h2");
    assert_eq!(
        t.credentials,
        Credentials::UserPassword {
            user: "ingest".into(),
            password: Secret("s@cret-1".into())
        }
    );
    for shown in [format!("{a:?}"), format!("{t:?}")] {
        assert!(!shown.contains("cret-1"), "{shown}");
    }
    assert!(format!("{a:?}").contains("nats://***@h1:4222"));
}

#[test]
fn a_user_without_password_is_a_token() {
    let t = args(&["--nats-url", "nats://t0ken@h"]).target().unwrap();
    assert_eq!(t.credentials, Credentials::Token(Secret("t0ken".into())));
    assert_eq!(t.urls(), "nats://h");
}

#[test]
fn url_errors_never_show_the_password() {
    for url in [
        "nats://u:hunter2@h:notaport",
        "smtp://u:hunter2@h",
        "nats://u:hunter2@[::1",
    ] {
        let e = args(&["--nats-url", url]).target().unwrap_err();
        assert!(matches!(e, NatsConfigError::BadUrl { .. }), "{url}: {e:?}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[test]
fn credentials_are_given_once() {
    let dir = std::env::temp_dir().join(format!("jetmail-natsargs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let pw = pw.to_str().unwrap();

    let t = args(&["--nats-user", "sender", "--nats-password-file", pw])
        .target()
        .unwrap();
    assert_eq!(
        t.credentials,
        Credentials::UserPassword {
            user: "sender".into(),
            password: Secret("from-file".into())
        }
    );
    let e = args(&[
        "--nats-url",
        "nats://a:b@h",
        "--nats-user",
        "sender",
        "--nats-password-file",
        pw,
    ])
    .target()
    .unwrap_err();
    assert!(matches!(e, NatsConfigError::TwoCredentials { .. }), "{e:?}");
    let e = args(&["--nats-url", "nats://a:b@h1,nats://a:c@h2"])
        .target()
        .unwrap_err();
    assert!(
        matches!(e, NatsConfigError::UrlCredentialsDiffer { .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains(":b@") && !e.to_string().contains(":c@"));

    // clap enforces the pairs and the exclusion.
    let parse = |argv: &[&str]| {
        Cli::try_parse_from(std::iter::once("t").chain(argv.iter().copied())).map(|_| ())
    };
    assert!(parse(&["--nats-user", "sender"]).is_err());
    assert!(parse(&["--nats-password-file", pw]).is_err());
    assert!(parse(&[
        "--nats-user",
        "s",
        "--nats-password-file",
        pw,
        "--nats-creds",
        pw
    ])
    .is_err());

    std::fs::write(dir.join("empty"), "\n").unwrap();
    let e = args(&[
        "--nats-user",
        "s",
        "--nats-password-file",
        dir.join("empty").to_str().unwrap(),
    ])
    .target()
    .unwrap_err();
    assert!(
        matches!(e, NatsConfigError::EmptyPasswordFile { .. }),
        "{e:?}"
    );
    let e = args(&["--nats-tls-ca", dir.join("missing.pem").to_str().unwrap()])
        .target()
        .unwrap_err();
    assert!(matches!(e, NatsConfigError::TlsCa { .. }), "{e:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn redaction_keeps_hosts_and_paths() {
    assert_eq!(
        redact_urls("nats://u:p@h:1,h2:4222,tls://x@y/p@q"),
        "nats://***@h:1,h2:4222,tls://***@y/p@q"
    );
}

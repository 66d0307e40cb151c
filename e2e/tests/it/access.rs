//! NATS access control with the shipped `nats.conf` (through `deploy/nats-entrypoint.sh`, as
//! compose runs it): who may connect, what each service's user is refused, and the whole
//! pipeline with every service on its own user over TLS, logging at debug level without ever
//! printing a password.

use std::time::Duration;

use async_nats::jetstream;
use jetmail_common::topology;
use jetmail_testkit::{wait_for, NatsAccess, NatsServer, Service, Stack, NATS_USERS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A JetStream context whose refused requests fail fast: the server answers a permission
/// violation with an error to the connection, never to the request, which times out.
fn js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client.clone())
}

/// A client of `user` that also reports the server's errors (a permission violation arrives
/// as one) on the returned channel.
async fn client_with_errors(
    nats: &NatsServer,
    user: &str,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<async_nats::ServerError>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let access = nats.access.as_ref().expect("secure server");
    let client = access
        .options(Some(user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e);
                }
            }
        })
        .connect(nats.url())
        .await?;
    Ok((client, rx))
}

/// Waits for one server error on `errors`: the refusal of what was just sent.
async fn expect_server_error(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<async_nats::ServerError>,
    what: &str,
) {
    let e = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: the server reported no error"))
        .expect("event channel open");
    assert!(
        matches!(e, async_nats::ServerError::Other(_)),
        "{what}: a permission violation, not {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_and_wrong_passwords_are_refused() -> anyhow::Result<()> {
    let nats = NatsServer::start_secure(NatsAccess::new(false)?).await?;
    let anonymous = nats.client_as(None).await.map(|_| ()).unwrap_err();
    assert_eq!(
        anonymous.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{anonymous}"
    );
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "ingest".into(),
        "pnot-the-password".into(),
    )
    .connect(nats.url())
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        wrong.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
    // Every user's own password works, and only with its own name.
    for user in NATS_USERS {
        nats.client_as(Some(user)).await?;
    }
    let swapped = async_nats::ConnectOptions::with_user_and_password(
        "ingest".into(),
        nats.access.as_ref().unwrap().password("sender"),
    )
    .connect(nats.url())
    .await
    .map(|_| ());
    assert!(swapped.is_err(), "the sender's password opened ingest");

    // A service whose password is refused stops at once with an error that names its user
    // and not the password it tried, even at debug level.
    let dir = jetmail_testkit::TempDir::new("access");
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "pwrong-password-42\n")?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(jetmail_testkit::bin_path("jetmail-monitor")?)
            .args(["--nats-url", &nats.url(), "--nats-user", "monitor"])
            .arg("--nats-password-file")
            .arg(&wrong_file)
            .args(["--listen", "127.0.0.1:0"])
            .env("JETMAIL_LOG", "debug")
            .output(),
    )
    .await
    .expect("a refused service must exit, not retry")?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("user monitor"), "{text}");
    assert!(
        !text.contains("pwrong-password-42"),
        "the password was printed:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_user_is_refused_what_it_must_not_do() -> anyhow::Result<()> {
    let nats = NatsServer::start_secure(NatsAccess::new(false)?).await?;
    let admin = nats.client().await?;
    let topo = jetmail_testkit::apply_senders_policy(&admin, &Default::default()).await?;
    let outbox_subject = topology::outbox_subject("c1", "example_com");

    // A sender may not publish to the outbox: the publish is refused (no ack comes) and the
    // stream stays empty. The same publish as ingest is stored: the subject is the outbox's.
    let (sender, mut sender_errors) = client_with_errors(&nats, "sender").await?;
    let refused = async {
        js(&sender)
            .publish(outbox_subject.clone(), "x".into())
            .await?
            .await
    }
    .await;
    assert!(refused.is_err(), "a sender published to the outbox");
    expect_server_error(&mut sender_errors, "sender publishing to the outbox").await;
    let mut outbox = topo.outbox.clone();
    assert_eq!(outbox.info().await?.state.messages, 0);
    let ingest = nats.client_as(Some("ingest")).await?;
    js(&ingest)
        .publish(outbox_subject.clone(), "x".into())
        .await?
        .await?;
    assert_eq!(outbox.info().await?.state.messages, 1);
    // ... and the sender still does what it must: publish an event (which is the ledger).
    js(&sender)
        .publish(
            topology::event_subject("c1", jetmail_common::wire::Outcome::Sent, 1),
            "{}".into(),
        )
        .await?
        .await?;

    // The web UI reads but writes nothing: no KV put, no `mail.` publish, no purge.
    let (webui, mut webui_errors) = client_with_errors(&nats, "webui").await?;
    let webui_js = js(&webui);
    let campaigns = webui_js.get_key_value(topology::CAMPAIGNS_BUCKET).await?;
    assert!(campaigns.put("c1", "forged".into()).await.is_err());
    expect_server_error(&mut webui_errors, "web UI writing KV").await;
    assert!(topo.campaigns.get("c1").await?.is_none());
    let event = webui_js
        .publish(
            topology::event_subject("c1", jetmail_common::wire::Outcome::Sent, 1),
            "{}".into(),
        )
        .await;
    assert!(
        match event {
            Ok(ack) => ack.await.is_err(),
            Err(_) => true,
        },
        "the web UI published an event"
    );
    expect_server_error(&mut webui_errors, "web UI publishing an event").await;
    let mut webui_outbox = webui_js.get_stream(topology::OUTBOX_STREAM).await?;
    assert!(webui_outbox.purge().await.is_err());
    expect_server_error(&mut webui_errors, "web UI purging the outbox").await;
    assert_eq!(webui_outbox.info().await?.state.messages, 1);

    // Only admin may delete a stream or a bucket: every service's user is refused, then
    // admin deletes both (the deletes themselves work).
    let admin_js = js(&admin);
    admin_js
        .create_stream(jetstream::stream::Config {
            name: "SCRATCH".into(),
            subjects: vec!["scratch.>".into()],
            ..Default::default()
        })
        .await?;
    for user in ["ingest", "sender", "monitor", "webui"] {
        let (client, mut errors) = client_with_errors(&nats, user).await?;
        let user_js = js(&client);
        assert!(
            user_js
                .delete_stream(topology::OUTBOX_STREAM)
                .await
                .is_err(),
            "{user} deleted MAIL_OUTBOX"
        );
        expect_server_error(&mut errors, &format!("{user} deleting a stream")).await;
        assert!(
            user_js.delete_stream("SCRATCH").await.is_err(),
            "{user} deleted a stream"
        );
        expect_server_error(&mut errors, &format!("{user} deleting SCRATCH")).await;
        assert!(
            user_js
                .delete_key_value(topology::CAMPAIGNS_BUCKET)
                .await
                .is_err(),
            "{user} deleted a bucket"
        );
        expect_server_error(&mut errors, &format!("{user} deleting a bucket")).await;
        assert!(
            user_js
                .delete_consumer_from_stream(topology::SENDERS_CONSUMER, topology::OUTBOX_STREAM)
                .await
                .is_err(),
            "{user} deleted the senders consumer"
        );
        expect_server_error(&mut errors, &format!("{user} deleting a consumer")).await;
    }
    assert_eq!(
        outbox.info().await?.state.messages,
        1,
        "MAIL_OUTBOX survives"
    );
    admin_js.get_key_value(topology::CAMPAIGNS_BUCKET).await?;
    admin_js.delete_stream("SCRATCH").await?;
    admin_js
        .delete_key_value(topology::CAMPAIGNS_BUCKET)
        .await?;
    Ok(())
}

/// The permission violations nats-server logged (one `[ERR] … Violation …` line each).
fn violations(nats: &NatsServer) -> String {
    nats.log()
        .lines()
        .filter(|l| l.contains("Violation"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One plain HTTP/1.1 GET: status and body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, answer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_every_service_on_its_own_user_over_tls() -> anyhow::Result<()> {
    const N: usize = 50;
    // Every process logs at debug level (the NATS client logs server URLs there): no
    // password may appear in any output.
    let debug = [("JETMAIL_LOG", "debug")];
    let mut stack = Stack::start_secure(NatsAccess::new(true)?, 0, &[]).await?;
    if let Some(mut m) = stack.monitor.take() {
        m.kill();
    }
    stack.start_monitor_with(&debug)?;
    let sink = stack.sink.url();
    stack.spawn_sender_with("s1", &sink, &[], &debug)?;
    assert!(
        stack.nats.url().starts_with("tls://"),
        "{}",
        stack.nats.url()
    );
    let access = stack.nats.access.as_ref().unwrap();

    // ingest's API and the web UI on their own users; the web UI reads the campaign list
    // through its own NATS connection.
    let ingest_port = jetmail_testkit::free_port();
    let mut ingest_args = stack.nats.service_args("ingest");
    ingest_args.extend([
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{ingest_port}"),
        // About NATS users, not the API's tokens (ingest's http_access tests are).
        "--insecure-no-auth".into(),
    ]);
    let ingest = Service::spawn(
        "ingest",
        "jetmail-ingest",
        &ingest_args,
        &debug,
        stack.dir.path(),
    )?;
    let webui_port = jetmail_testkit::free_port();
    let mut webui_args = stack.nats.service_args("webui");
    webui_args.extend([
        "--ingest-url".into(),
        format!("http://127.0.0.1:{ingest_port}"),
        "--listen".into(),
        format!("127.0.0.1:{webui_port}"),
        "--insecure-no-auth".into(),
    ]);
    let webui = Service::spawn(
        "webui",
        "jetmail-webui",
        &webui_args,
        &debug,
        stack.dir.path(),
    )?;

    // Submitted by the ingest CLI with its password in the URL (taken out before the client
    // logs the URL).
    let csv = stack.write_csv("r.csv", N)?;
    let body = stack.dir.path().join("body.txt");
    std::fs::write(&body, "Hello {{ name }}.\n")?;
    let url_with_password = format!(
        "tls://ingest:{}@127.0.0.1:{}",
        access.password("ingest"),
        stack.nats.port
    );
    let tls = access.tls.as_ref().unwrap();
    let submit = tokio::process::Command::new(jetmail_testkit::bin_path("jetmail-ingest")?)
        .args(["--nats-url", &url_with_password])
        .arg("--nats-tls-ca")
        .arg(&tls.ca)
        .args([
            "submit",
            "--from",
            "News <news@example.com>",
            "--subject",
            "Hi {{ name }}",
        ])
        .arg("--text")
        .arg(&body)
        .arg("--recipients")
        .arg(&csv)
        .args(["--campaign-id", "safe"])
        .env("JETMAIL_LOG", "debug")
        .output()
        .await?;
    let submit_out = String::from_utf8_lossy(&submit.stdout).to_string()
        + &String::from_utf8_lossy(&submit.stderr);
    assert!(submit.status.success(), "submit failed:\n{submit_out}");

    // A second campaign under its own rate goes through the held queue: the sender creates
    // its held consumer and moves recipients, the monitor counts them.
    let held_csv = stack.dir.path().join("held.csv");
    std::fs::write(
        &held_csv,
        (0..10).fold("email\n".to_string(), |s, i| {
            s + &format!("held{i}@example.org\n")
        }),
    )?;
    stack.submit(&held_csv, "held", &["--rate", "20/s"])?;

    for (id, n) in [("safe", N), ("held", 10)] {
        let done = stack.wait_done(id, Duration::from_secs(60)).await;
        let refused = violations(&stack.nats);
        let progress = done.unwrap_or_else(|e| panic!("{e}; refused by nats-server:\n{refused}"));
        assert_eq!(progress.sent, n as u64, "{id}: {progress:?}");
    }
    let counts = stack.sink.counts();
    assert_eq!(counts.len(), N + 10, "{counts:?}");
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    assert_eq!(stack.outbox_len().await, 0);

    wait_for(
        "the web UI to list the campaign",
        Duration::from_secs(20),
        || async {
            let (code, page) = http_get(webui_port, "/campaigns").await.ok()?;
            (code == 200 && page.contains("safe")).then_some(())
        },
    )
    .await?;

    // Nothing any service did was refused: least privilege, not too little privilege.
    let server_log = stack.nats.log();
    let refused: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains("Violation"))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by nats-server:\n{}",
        refused.join("\n")
    );

    let mut outputs = vec![("submit".to_string(), submit_out)];
    for s in stack
        .senders
        .iter()
        .chain(stack.monitor.iter())
        .chain([&ingest, &webui])
    {
        outputs.push((s.name.clone(), s.log()));
    }
    for (name, text) in &outputs {
        assert!(text.contains("DEBUG"), "{name} did not log at debug level");
        for user in NATS_USERS {
            assert!(
                !text.contains(&access.password(user)),
                "{name} printed the {user} password"
            );
        }
    }
    Ok(())
}

//! The SMTP sink's maildir, as compose.yaml uses it: a sink restarted on the same directory
//! (compose `down` then `up` keeps the mail volume) numbers its files on after those already
//! there, so no message of an earlier run is overwritten.

use jetmail_testkit::{SmtpSink, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// Reads one reply, which must have `code`.
async fn expect(r: &mut Reader, code: &str) -> anyhow::Result<()> {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        anyhow::ensure!(line.starts_with(code), "expected {code}, got {line:?}");
        // The last line of a reply has a space after the code.
        if line.as_bytes().get(3) == Some(&b' ') {
            return Ok(());
        }
    }
}

/// Sends one message to `rcpt` over plain SMTP, one command at a time.
async fn send_one(addr: std::net::SocketAddr, rcpt: &str) -> anyhow::Result<()> {
    let (r, mut w) = TcpStream::connect(addr).await?.into_split();
    let mut r = BufReader::new(r);
    expect(&mut r, "220").await?;
    let data = format!("To: {rcpt}\r\nSubject: t\r\n\r\nhello\r\n.\r\n");
    for (command, code) in [
        ("EHLO test\r\n".to_string(), "250"),
        ("MAIL FROM:<t@example.com>\r\n".to_string(), "250"),
        (format!("RCPT TO:<{rcpt}>\r\n"), "250"),
        ("DATA\r\n".to_string(), "354"),
        (data, "250"),
        ("QUIT\r\n".to_string(), "221"),
    ] {
        w.write_all(command.as_bytes()).await?;
        expect(&mut r, code).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_restarted_sink_numbers_its_mail_on_after_the_files_already_there() {
    let dir = TempDir::new("sink-maildir");
    let earlier = dir.path().join("00000007.eml");
    std::fs::write(&earlier, "an earlier run's message").unwrap();

    let sink = SmtpSink::start_on(
        "127.0.0.1:0".parse().unwrap(),
        false,
        Some(dir.path().to_path_buf()),
    )
    .await
    .unwrap();
    send_one(sink.addr, "ann@example.com").await.unwrap();

    assert_eq!(
        std::fs::read_to_string(&earlier).unwrap(),
        "an earlier run's message",
        "the earlier file is kept"
    );
    let written = std::fs::read_to_string(dir.path().join("00000008.eml")).unwrap();
    assert!(written.contains("To: ann@example.com"), "{written}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

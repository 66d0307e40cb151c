//! A local SMTP sink for the demo: accepts every message and writes it to a directory.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Local SMTP sink: accepts all mail and writes each message to --maildir")]
struct Args {
    #[arg(long, env = "JETMAIL_SINK_LISTEN", default_value = "127.0.0.1:2525")]
    listen: std::net::SocketAddr,
    /// Directory for the received messages (one .eml file each); none keeps only counts.
    #[arg(long, env = "JETMAIL_SINK_MAILDIR")]
    maildir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.maildir {
        std::fs::create_dir_all(dir)?;
    }
    let sink = jetmail_testkit::SmtpSink::start_on(args.listen, false, args.maildir).await?;
    eprintln!("jetmail-sink listening on {}", sink.addr);
    let shutdown = jetmail_common::shutdown::shutdown_token();
    let mut last = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                let total = sink.total();
                if total != last {
                    eprintln!("jetmail-sink received {total} messages");
                    last = total;
                }
            }
        }
    }
    Ok(())
}

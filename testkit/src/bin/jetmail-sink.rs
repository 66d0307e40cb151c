//! A local SMTP sink for the demo and compose.yaml: accepts every message and writes it to a
//! directory.

use std::time::Duration;

use clap::Parser;
use jetmail_common::config::parse_duration;

#[derive(Parser)]
#[command(about = "Local SMTP sink: accepts all mail and writes each message to --maildir")]
struct Args {
    #[arg(long, env = "JETMAIL_SINK_LISTEN", default_value = "127.0.0.1:2525")]
    listen: std::net::SocketAddr,
    /// Directory for the received messages (one .eml file each); none keeps only counts.
    #[arg(long, env = "JETMAIL_SINK_MAILDIR")]
    maildir: Option<std::path::PathBuf>,
    /// Answer every command this long after it arrived, as a distant relay would (`500ms`):
    /// with it, a campaign takes long enough to watch senders share it, scale and stop.
    #[arg(long, env = "JETMAIL_SINK_DELAY", default_value = "0s", value_parser = parse_duration)]
    delay: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.maildir {
        std::fs::create_dir_all(dir)?;
    }
    let sink = jetmail_testkit::SmtpSink::start_on(args.listen, false, args.maildir).await?;
    sink.set_faults(|f| f.delay = args.delay);
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

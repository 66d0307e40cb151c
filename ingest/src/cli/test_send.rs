//! `jetmail-ingest test-send --to ADDR…`: the campaign of `submit`'s options delivered once
//! to each address, at once, as a test (listed and counted nowhere).

use std::path::PathBuf;

use anyhow::Context;
use jetmail_common::topology::Topology;
use jetmail_common::wire::CampaignSpec;

use crate::feed::rows_from_reader_with;
use crate::recipients::RowClassifier;
use crate::unsubscribe::UnsubscribeArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct TestSendArgs {
    /// Where the test goes: 1 to 10 addresses (repeat, or comma-separated).
    #[arg(long, required = true, value_delimiter = ',')]
    pub to: Vec<String>,
    /// Sender address, e.g. `News <news@example.com>`.
    #[arg(long, env = "JETMAIL_FROM")]
    pub from: String,
    /// Subject template.
    #[arg(long, env = "JETMAIL_SUBJECT")]
    pub subject: String,
    /// File holding the text body template.
    #[arg(long, env = "JETMAIL_TEXT")]
    pub text: PathBuf,
    /// File holding the HTML body template.
    #[arg(long, env = "JETMAIL_HTML")]
    pub html: Option<PathBuf>,
    /// Recipients file: the first valid row's variables render the test.
    #[arg(long, env = "JETMAIL_RECIPIENTS")]
    pub recipients: Option<PathBuf>,
    #[command(flatten)]
    pub unsubscribe: UnsubscribeArgs,
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn run(topo: &Topology, a: TestSendArgs) -> anyhow::Result<()> {
    let unsubscribe = a.unsubscribe.load()?;
    let spec = CampaignSpec {
        from: a.from.clone(),
        subject: a.subject.clone(),
        text: read(&a.text)?,
        html: a.html.as_deref().map(read).transpose()?,
    };
    let rows = match &a.recipients {
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            rows_from_reader_with(f, RowClassifier::without_dedup())
                .with_context(|| format!("{}", p.display()))?
                .0
        }
        None => crate::feed::Rows::from(Vec::new()),
    };
    let r = crate::test_send::send(topo, spec, &a.to, rows, unsubscribe).await?;
    if let Some(v) = &r.variables_from {
        eprintln!("rendered with the variables of {v}");
    }
    println!("test {}: published {}", r.id, r.published);
    Ok(())
}

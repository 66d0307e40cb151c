//! One recipient's mail as it goes on the wire: the rendered MIME message with its
//! one-click unsubscribe headers (RFC 2369, RFC 8058), DKIM-signed ([`crate::dkim`]) off the
//! runtime thread, and its envelope, whose sender is a per-recipient VERP address when
//! `--bounce-domain` is set (the From header stays the campaign's). Templates render on the
//! blocking pool, within the limits of [`jetmail_common::template`].

use std::sync::Arc;

use jetmail_common::compliance::verp_address;
use jetmail_common::template::{render_shared, Rendered, TemplateError};
use jetmail_common::wire::{OutboxMessage, UnsubscribeLinks};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};

use crate::campaigns::Campaign;
use crate::dkim::{DkimError, DkimKeys};

/// How this sender dresses every mail (`--dkim-*`, `--bounce-domain`).
#[derive(Debug, Clone, Default)]
pub struct MessageOptions {
    pub dkim: Arc<DkimKeys>,
    /// `--bounce-domain`: envelope senders become `bounces+<campaign>.<seq>@<domain>`.
    pub bounce_domain: Option<String>,
}

/// Why a recipient's message cannot be built: permanent, so it is dead-lettered as `failed`
/// with this text as its reason.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("template {0}")]
    Template(#[from] TemplateError),
    #[error("from: {0}")]
    From(#[source] lettre::address::AddressError),
    #[error("to: {0}")]
    To(#[source] lettre::address::AddressError),
    #[error("envelope sender {address}: {source}")]
    Envelope {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("--bounce-domain {0:?}: give an ASCII (IDNA) domain name")]
    BounceDomain(String),
    #[error("cannot build message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("unsubscribe link refused: {0}")]
    Unsubscribe(&'static str),
    #[error(transparent)]
    Dkim(#[from] DkimError),
    #[error("DKIM signing task failed: {0}")]
    SigningTask(#[from] tokio::task::JoinError),
}

/// `--bounce-domain`, checked: a VERP address on it must be a valid address.
pub fn check_bounce_domain(domain: &str) -> Result<String, BuildError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let address = verp_address("c", 1, &domain);
    match address.parse::<lettre::Address>() {
        Ok(_) if !domain.is_empty() && domain.is_ascii() => Ok(domain),
        Ok(_) => Err(BuildError::BounceDomain(domain)),
        Err(source) => Err(BuildError::Envelope { address, source }),
    }
}

/// A mail ready for the relay.
pub struct Built {
    /// MAIL FROM: the VERP address, or the From address.
    pub envelope_from: lettre::Address,
    pub to: lettre::Address,
    pub body: Vec<u8>,
}

/// Renders, builds and signs one recipient's mail.
pub async fn prepare(
    opts: &MessageOptions,
    campaign: &Campaign,
    m: &OutboxMessage,
) -> Result<Built, BuildError> {
    let links = unsubscribe_links(campaign.record.unsubscribe.as_ref(), m)?;
    // On the blocking pool, bounded by fuel, size and a timeout: never on this thread.
    let rendered = render_shared(
        campaign.templates.clone(),
        m.email.clone(),
        m.vars.clone(),
        links.as_ref().map(|l| l.url.clone()),
    )
    .await?;
    let from = campaign.from.clone().map_err(BuildError::From)?;
    let from_domain = from.email.domain().to_string();
    let mut built = build_message(from, m, rendered, links.as_ref())?;
    if let Some(domain) = &opts.bounce_domain {
        let address = verp_address(&m.campaign, m.seq, domain);
        built.envelope_from = address
            .parse()
            .map_err(|source| BuildError::Envelope { address, source })?;
    }
    if !opts.dkim.is_empty() {
        built.body = sign(opts.dkim.clone(), from_domain, built.body).await?;
    }
    Ok(built)
}

/// Puts the DKIM signatures on top of `body`, on the blocking pool: RSA costs about a
/// millisecond of CPU, which the runtime thread (heartbeats, acks, every other send) must
/// not wait for.
async fn sign(
    dkim: Arc<DkimKeys>,
    from_domain: String,
    body: Vec<u8>,
) -> Result<Vec<u8>, BuildError> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut signed = dkim.sign(&from_domain, &body)?;
        signed.extend_from_slice(&body);
        Ok::<_, DkimError>(signed)
    })
    .await??)
}

/// A recipient's unsubscribe link and the header lines that carry it.
pub struct Links {
    /// `<base_url>/unsubscribe/<token>`, also the template's `{{ unsubscribe_url }}`.
    pub url: String,
    /// `List-Unsubscribe` and `List-Unsubscribe-Post`, CRLF-terminated.
    pub headers: String,
}

/// The links of a campaign mail, when the campaign has them and the message a token. Every
/// part is checked for characters that could end the header or the `<…>` (header
/// injection); tokens are base64url and dot, so a token with anything else is refused.
pub fn unsubscribe_links(
    cfg: Option<&UnsubscribeLinks>,
    m: &OutboxMessage,
) -> Result<Option<Links>, BuildError> {
    let (Some(cfg), Some(token)) = (cfg, m.unsubscribe_token.as_deref()) else {
        return Ok(None);
    };
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(BuildError::Unsubscribe("the token is not base64url"));
    }
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>\",".contains(&b))
    };
    let base = cfg.base_url.trim_end_matches('/');
    if !safe(base) || !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(BuildError::Unsubscribe(
            "the base URL is not a plain http(s) URL",
        ));
    }
    let url = format!("{base}/unsubscribe/{token}");
    let mut value = format!("<{url}>");
    if let Some(mailto) = &cfg.mailto {
        if !safe(mailto) || mailto.contains('?') || !mailto.contains('@') {
            return Err(BuildError::Unsubscribe("the mailto address is not plain"));
        }
        // Folded: the line stays short whatever the token's length.
        value.push_str(&format!(
            ",\r\n <mailto:{mailto}?subject=unsubscribe-{token}>"
        ));
    }
    let headers = format!(
        "List-Unsubscribe: {value}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    );
    Ok(Some(Links { url, headers }))
}

/// Renders the MIME message and its envelope (the envelope sender is the From address).
pub fn build_message(
    from_mb: Mailbox,
    m: &OutboxMessage,
    r: Rendered,
    links: Option<&Links>,
) -> Result<Built, BuildError> {
    let from_addr = from_mb.email.clone();
    let to_addr: lettre::Address = m.email.parse().map_err(BuildError::To)?;
    let domain = from_addr.domain().to_string();
    let builder = lettre::Message::builder()
        .from(from_mb)
        .to(Mailbox::new(None, to_addr.clone()))
        .subject(r.subject)
        // Deterministic: a mail sent twice carries the same Message-ID, so clients fold it.
        .message_id(Some(format!(
            "<{}.{}.r{}@{domain}>",
            m.campaign, m.seq, m.replay
        )));
    let message = match r.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(r.text, html)),
        None => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(r.text),
        ),
    }?;
    let formatted = message.formatted();
    // The list headers go on top: header order carries no meaning, and written by hand
    // they are folded where we choose rather than where an encoder would.
    let body = match links {
        Some(l) => [l.headers.as_bytes(), &formatted].concat(),
        None => formatted,
    };
    Ok(Built {
        envelope_from: from_addr,
        to: to_addr,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(token: Option<&str>) -> OutboxMessage {
        OutboxMessage {
            v: 1,
            campaign: "c1".into(),
            seq: 7,
            email: "ann@example.com".into(),
            vars: Default::default(),
            replay: 0,
            published_ms: 0,
            unsubscribe_token: token.map(str::to_string),
        }
    }

    fn links(mailto: Option<&str>) -> UnsubscribeLinks {
        UnsubscribeLinks {
            base_url: "https://news.example.com/".into(),
            mailto: mailto.map(str::to_string),
        }
    }

    #[test]
    fn list_unsubscribe_headers_carry_the_token() {
        let l = unsubscribe_links(
            Some(&links(Some("leave@example.com"))),
            &msg(Some("abc.D-_e")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.url, "https://news.example.com/unsubscribe/abc.D-_e");
        assert_eq!(
            l.headers,
            "List-Unsubscribe: <https://news.example.com/unsubscribe/abc.D-_e>,\r\n \
             <mailto:leave@example.com?subject=unsubscribe-abc.D-_e>\r\n\
             List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        );
        // No links configured, or no token: no headers.
        assert!(unsubscribe_links(None, &msg(Some("abc")))
            .unwrap()
            .is_none());
        assert!(unsubscribe_links(Some(&links(None)), &msg(None))
            .unwrap()
            .is_none());
    }

    #[test]
    fn header_injection_is_refused() {
        for token in ["a\r\nBcc: x@example.com", "a>b", "a b", ""] {
            assert!(
                unsubscribe_links(Some(&links(None)), &msg(Some(token))).is_err(),
                "{token:?} accepted"
            );
        }
        let mut bad = links(None);
        bad.base_url = "https://x.example\r\nBcc: y@example.com".into();
        assert!(unsubscribe_links(Some(&bad), &msg(Some("t"))).is_err());
        assert!(unsubscribe_links(Some(&links(Some("a@b\r\nX: y"))), &msg(Some("t"))).is_err());
    }

    #[test]
    fn headers_lead_the_built_message() {
        let l = unsubscribe_links(Some(&links(None)), &msg(Some("tok"))).unwrap();
        let r = Rendered {
            subject: "Hi".into(),
            text: "Hello".into(),
            html: None,
        };
        let b = build_message(
            "news@example.com".parse().unwrap(),
            &msg(Some("tok")),
            r,
            l.as_ref(),
        )
        .unwrap();
        let text = String::from_utf8(b.body).unwrap();
        assert!(
            text.starts_with("List-Unsubscribe: <https://news.example.com/unsubscribe/tok>\r\n")
        );
        assert_eq!(text.matches("List-Unsubscribe-Post:").count(), 1);
        assert_eq!(b.envelope_from.to_string(), "news@example.com");
    }
}

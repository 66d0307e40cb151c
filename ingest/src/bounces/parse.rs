//! Reading one raw bounce or complaint (RFC 5322, parsed by Stalwart's `mail-parser`) into
//! what it says about each recipient. Pure: no broker, so every real-world sample is a unit
//! test. Anything that is not clearly a report about a recipient is an error, never a guess:
//! a wrongly suppressed address is a customer lost.
//!
//! - A DSN (RFC 3464: `multipart/report; report-type=delivery-status`) gives per-recipient
//!   `Final-Recipient`, `Action` and `Status`. `failed` with a 5.1.x code that says the
//!   mailbox or its domain does not exist is a hard bounce; `delayed` or a 4.x.x is soft;
//!   anything else (5.7.x policy, 5.2.2 mailbox full, `delivered`) is not acted on.
//! - An ARF report (RFC 5965: `report-type=feedback-report`) with `Feedback-Type: abuse`
//!   is a complaint about `Original-Rcpt-To`, or the `To` of the attached original.
//!
//! The campaign comes from the VERP address (`bounces+<campaign>.<seq>@…`) the report was
//! sent to, or the original message's `Return-Path` / the report's `Original-Mail-From`.

use jetmail_common::api::ReportKind;
use jetmail_common::compliance::parse_verp;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};

/// Enhanced status codes (class 5, subject 1) that say the address cannot exist: bad
/// mailbox (1), bad system (2), bad syntax (3), moved without forwarding (6), no mail
/// accepted by the domain (null MX, 10).
const HARD_DETAILS: [u16; 5] = [1, 2, 3, 6, 10];

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The address does not exist: suppress as `hard_bounce`. `status` is its code.
    Hard { address: String, status: String },
    /// A temporary failure or a delay: counted only.
    Soft { address: String, status: String },
    /// A complaint (`Feedback-Type: abuse`): suppress as `complaint`.
    Complaint { address: String },
    /// Named but not acted on, with why (a 5.7.x policy refusal, a delivered action, another
    /// feedback type).
    Ignored { address: String, why: String },
}

/// One report, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    pub campaign: Option<String>,
    pub verdicts: Vec<Verdict>,
}

/// A message that is not a report ingest can act on. Nothing is suppressed for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("not a mail message: no header found")]
    NotAMessage,
    #[error("not a bounce or complaint report: its Content-Type is {0}, not multipart/report")]
    NotAReport(String),
    #[error("a multipart/report of type {0:?}: expected delivery-status or feedback-report")]
    UnknownReportType(String),
    #[error("the report has no {0} part (truncated?)")]
    MissingPart(&'static str),
    #[error("the delivery status names no recipient (a recipient block without Final-Recipient)")]
    NoFinalRecipient,
    #[error("the feedback report names no recipient (no Original-Rcpt-To, no To in the original)")]
    NoComplainant,
}

/// Reads one raw message.
pub fn parse(raw: &[u8]) -> Result<Report, ReportError> {
    let msg = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(ReportError::NotAMessage)?;
    let ct = msg.root_part().content_type();
    let is_report = ct.is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    if !is_report {
        let shown = ct
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_else(|| "text/plain (none given)".into());
        return Err(ReportError::NotAReport(shown));
    }
    let report_type = ct
        .and_then(|c| c.attribute("report-type"))
        .unwrap_or("")
        .to_ascii_lowercase();
    match report_type.as_str() {
        "delivery-status" => dsn(&msg),
        "feedback-report" => arf(&msg),
        other => Err(ReportError::UnknownReportType(other.to_string())),
    }
}

fn has_type(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case(ctype)
            && c.subtype()
                .is_some_and(|s| subtypes.iter().any(|t| s.eq_ignore_ascii_case(t)))
    })
}

/// The report's part of type `message/<subtypes>` (skipping the root).
fn part<'a, 'x>(msg: &'a Message<'x>, subtypes: &[&str]) -> Option<&'a MessagePart<'x>> {
    msg.parts
        .iter()
        .skip(1)
        .find(|p| has_type(p, "message", subtypes))
}

/// The original message returned with the report, as a message: `message/rfc822` (parsed by
/// mail-parser already) or `text/rfc822-headers` (headers only).
fn original<'a>(msg: &'a Message<'a>) -> Option<Message<'a>> {
    let p = msg.parts.iter().skip(1).find(|p| {
        has_type(p, "message", &["rfc822", "global"])
            || has_type(p, "text", &["rfc822-headers", "global-headers"])
    })?;
    match p.message() {
        Some(m) => Some(m.clone()),
        None => MessageParser::default().parse(p.contents()),
    }
}

/// Header-style fields (`Name: value`, folded lines joined), in blocks separated by blank
/// lines: RFC 3464's per-message block then one block per recipient; RFC 5965's one block.
fn field_blocks(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(body);
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !blocks.last().is_some_and(Vec::is_empty) {
                blocks.push(Vec::new());
            }
            continue;
        }
        let block = blocks.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = block.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    blocks.retain(|b| !b.is_empty());
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; Ann <ann@example.com>` → `ann@example.com` (the address type is optional).
fn typed_address(value: &str) -> String {
    let v = value.split_once(';').map_or(value, |(_, a)| a);
    bare_address(v)
}

/// The address in `Name <a@b>` or `<a@b>` or `a@b`.
fn bare_address(v: &str) -> String {
    let v = v.trim();
    match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].trim().to_string(),
        _ => v.trim_matches(['<', '>', '"']).trim().to_string(),
    }
}

/// An enhanced status code `c.s.d` at the start of `s`, e.g. `5.1.1 (bad mailbox)`.
fn status_code(s: &str) -> Option<(u16, u16, u16)> {
    let word = s.split_whitespace().next()?;
    let mut it = word.split('.').map(|p| p.parse::<u16>().ok());
    let code = (it.next()??, it.next()??, it.next()??);
    (matches!(code.0, 2 | 4 | 5) && it.next().is_none()).then_some(code)
}

/// The enhanced code inside a diagnostic (`smtp; 550 5.1.1 <a@b>: user unknown`).
fn diagnostic_code(s: &str) -> Option<(u16, u16, u16)> {
    s.split([' ', ';', '#', '(', ')'])
        .find_map(|w| status_code(w.trim_end_matches([',', ':', '.'])))
}

fn dsn(msg: &Message<'_>) -> Result<Report, ReportError> {
    let status = part(msg, &["delivery-status", "global-delivery-status"])
        .ok_or(ReportError::MissingPart("message/delivery-status"))?;
    let blocks = field_blocks(status.contents());
    // Recipient blocks are those with an Action or a Status; every one must say whom.
    let recipients: Vec<_> = blocks
        .iter()
        .filter(|b| field(b, "action").is_some() || field(b, "status").is_some())
        .collect();
    if recipients.is_empty() {
        return Err(ReportError::NoFinalRecipient);
    }
    let mut verdicts = Vec::new();
    for b in recipients {
        let address =
            typed_address(field(b, "final-recipient").ok_or(ReportError::NoFinalRecipient)?);
        if !address.contains('@') {
            return Err(ReportError::NoFinalRecipient);
        }
        let action = field(b, "action").unwrap_or("").to_ascii_lowercase();
        let mut code = field(b, "status").and_then(status_code);
        // Exchange and others write 5.0.0 and put the telling code in the diagnostic.
        if code.is_none_or(|(_, s, _)| s == 0) {
            if let Some(d) = field(b, "diagnostic-code").and_then(diagnostic_code) {
                if code.is_none_or(|c| c.0 == d.0) {
                    code = Some(d);
                }
            }
        }
        let shown = code
            .map(|(c, s, d)| format!("{c}.{s}.{d}"))
            .unwrap_or_else(|| "no status".into());
        verdicts.push(match (action.as_str(), code) {
            ("delayed", _) | ("failed", Some((4, _, _))) => Verdict::Soft {
                address,
                status: shown,
            },
            ("failed", Some((5, 1, d))) if HARD_DETAILS.contains(&d) => Verdict::Hard {
                address,
                status: shown,
            },
            ("failed", _) => Verdict::Ignored {
                address,
                why: format!("permanent failure {shown}: not a missing mailbox"),
            },
            (other, _) => Verdict::Ignored {
                address,
                why: format!("action {other:?}"),
            },
        });
    }
    Ok(Report {
        kind: ReportKind::DeliveryStatus,
        campaign: campaign(msg, None),
        verdicts,
    })
}

fn arf(msg: &Message<'_>) -> Result<Report, ReportError> {
    let fr = part(msg, &["feedback-report"])
        .ok_or(ReportError::MissingPart("message/feedback-report"))?;
    let fields: Vec<(String, String)> = field_blocks(fr.contents()).into_iter().flatten().collect();
    let feedback_type = field(&fields, "feedback-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let orig = original(msg);
    let mut addresses: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "original-rcpt-to")
        .map(|(_, v)| bare_address(v))
        .filter(|a| a.contains('@'))
        .collect();
    if addresses.is_empty() {
        if let Some(to) = orig
            .as_ref()
            .and_then(|o| o.to())
            .and_then(|t| t.first())
            .and_then(|a| a.address())
        {
            addresses.push(to.to_string());
        }
    }
    if addresses.is_empty() {
        return Err(ReportError::NoComplainant);
    }
    let verdicts = addresses
        .into_iter()
        .map(|address| {
            if feedback_type == "abuse" {
                Verdict::Complaint { address }
            } else {
                Verdict::Ignored {
                    address,
                    why: format!("feedback type {feedback_type:?}"),
                }
            }
        })
        .collect();
    Ok(Report {
        kind: ReportKind::Feedback,
        campaign: campaign(msg, field(&fields, "original-mail-from")).or_else(|| {
            orig.as_ref()
                .and_then(|o| o.header_raw("Return-Path"))
                .and_then(|r| parse_verp(&bare_address(r)))
                .map(|(c, _)| c)
        }),
        verdicts,
    })
}

/// The campaign of the VERP address the report was sent to (`To`, `Delivered-To`, …), or of
/// `extra` (an ARF's Original-Mail-From), or of the returned original's `Return-Path`.
fn campaign(msg: &Message<'_>, extra: Option<&str>) -> Option<String> {
    let headers = ["To", "Delivered-To", "X-Original-To", "Envelope-To"];
    let from_report = headers
        .iter()
        .filter_map(|h| msg.header_raw(*h))
        .chain(extra)
        .find_map(|v| v.split(',').find_map(|a| parse_verp(&bare_address(a))));
    from_report
        .or_else(|| {
            original(msg)
                .and_then(|o| o.header_raw("Return-Path").map(bare_address))
                .and_then(|r| parse_verp(&r))
        })
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! sample {
        ($name:literal) => {
            parse(include_bytes!(concat!("../../tests/bounces/", $name)))
        };
    }

    const CAMPAIGN: &str = "c1719000000000-a1b2c3";

    fn hard(a: &str, s: &str) -> Verdict {
        Verdict::Hard {
            address: a.into(),
            status: s.into(),
        }
    }

    #[test]
    fn postfix_user_unknown_is_a_hard_bounce_of_its_campaign() {
        let r = sample!("postfix-user-unknown.eml").unwrap();
        assert_eq!(r.kind, ReportKind::DeliveryStatus);
        assert_eq!(r.campaign.as_deref(), Some(CAMPAIGN));
        assert_eq!(r.verdicts, vec![hard("nobody.here@EXAMPLE.org", "5.1.1")]);
    }

    #[test]
    fn exchange_5_0_0_takes_the_code_of_its_diagnostic() {
        let r = sample!("exchange-recipient-not-found.eml").unwrap();
        assert_eq!(r.campaign.as_deref(), Some(CAMPAIGN));
        assert_eq!(r.verdicts, vec![hard("Jane.Doe@Contoso.com", "5.1.10")]);
    }

    #[test]
    fn delays_are_soft_and_policy_refusals_are_not_acted_on() {
        let r = sample!("gmail-delayed.eml").unwrap();
        assert!(matches!(&r.verdicts[..], [Verdict::Soft { status, .. }] if status == "4.4.1"));
        let r = sample!("gmail-policy-block.eml").unwrap();
        assert!(
            matches!(&r.verdicts[..], [Verdict::Ignored { address, .. }] if address == "someone@gmail.com")
        );
    }

    #[test]
    fn each_recipient_of_a_dsn_gets_its_own_verdict() {
        let r = sample!("postfix-mixed.eml").unwrap();
        assert_eq!(r.verdicts.len(), 3);
        assert_eq!(r.verdicts[0], hard("gone@example.net", "5.1.1"));
        assert!(
            matches!(&r.verdicts[1], Verdict::Soft { address, .. } if address == "full@example.net")
        );
        assert_eq!(
            r.verdicts[2],
            hard("nodomain@no-such-domain.example", "5.1.2")
        );
    }

    #[test]
    fn arf_abuse_reports_are_complaints() {
        let r = sample!("yahoo-arf-abuse.eml").unwrap();
        assert_eq!(r.kind, ReportKind::Feedback);
        assert_eq!(r.campaign.as_deref(), Some(CAMPAIGN));
        assert_eq!(
            r.verdicts,
            vec![Verdict::Complaint {
                address: "complainer@yahoo.com".into()
            }]
        );
        // Without Original-Rcpt-To, the attached original's To; the campaign from its
        // Return-Path.
        let r = sample!("aol-arf-redacted-rcpt.eml").unwrap();
        assert_eq!(r.campaign.as_deref(), Some(CAMPAIGN));
        assert_eq!(
            r.verdicts,
            vec![Verdict::Complaint {
                address: "Pat.Complains@AOL.com".into()
            }]
        );
        let r = sample!("arf-not-spam.eml").unwrap();
        assert!(matches!(&r.verdicts[..], [Verdict::Ignored { .. }]));
    }

    #[test]
    fn malformed_messages_are_clear_errors() {
        assert!(matches!(
            sample!("malformed-auto-reply.eml"),
            Err(ReportError::NotAReport(ct)) if ct == "text/plain"
        ));
        assert_eq!(
            sample!("malformed-truncated.eml"),
            Err(ReportError::MissingPart("message/delivery-status"))
        );
        assert_eq!(
            sample!("malformed-no-final-recipient.eml"),
            Err(ReportError::NoFinalRecipient)
        );
        assert!(sample!("malformed-binary.eml").is_err());
        assert_eq!(parse(b""), Err(ReportError::NotAMessage));
        let no_status = b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x--\r\n";
        assert!(
            matches!(parse(no_status), Err(ReportError::UnknownReportType(t)) if t == "disposition-notification")
        );
    }

    #[test]
    fn status_codes_parse_strictly() {
        assert_eq!(status_code("5.1.1 (bad mailbox)"), Some((5, 1, 1)));
        assert_eq!(status_code("5.1"), None);
        assert_eq!(status_code("550"), None);
        assert_eq!(
            diagnostic_code("smtp; 550-5.7.26 blocked"),
            None,
            "550-5.7.26 is one word; a stricter reader would split it, but a policy code \
             must never read as a missing mailbox"
        );
        assert_eq!(
            diagnostic_code("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound;"),
            Some((5, 1, 10))
        );
    }
}

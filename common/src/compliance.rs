//! Sending like a good citizen, the formats every service agrees on: the suppression list's
//! entries and their key (one address, one entry, however it was written), the signed
//! one-click unsubscribe token (RFC 8058), and the per-recipient envelope sender (VERP) that
//! lets a bounce be traced back to its campaign and recipient.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::address::{parse_recipient, AddressError};
use crate::topology::validate_campaign_id;

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// The recipient used the unsubscribe link or header.
    Unsubscribed,
    /// The mailbox does not exist (5.1.1 and kin), at send time or in a DSN.
    HardBounce,
    /// The recipient reported the mail as spam (an ARF report).
    Complaint,
    /// An operator added it.
    Manual,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 4] = [
        SuppressionReason::Unsubscribed,
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Unsubscribed => "unsubscribed",
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Manual => "manual",
        }
    }
}

/// A word that is not a suppression reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reason {0:?}: expected unsubscribed, hard_bounce, complaint or manual")]
pub struct UnknownReason(pub String);

impl FromStr for SuppressionReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, UnknownReason> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the suppression list (bucket `mail_suppressions`, key [`suppression_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    #[serde(default = "crate::wire::wire_version")]
    pub v: u32,
    /// The address in its one normal form ([`normalize_address`]).
    pub address: String,
    pub reason: SuppressionReason,
    pub at_ms: u64,
    /// The campaign that caused it (an unsubscribe link, a bounce), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The SMTP reply or report line that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The one form of an address the list compares: local part as written (RFC 5321 makes it
/// case-sensitive, though few servers treat it so), domain lower-case ASCII (IDNA), so
/// `Ann@Bücher.example` and `Ann@xn--bcher-kva.EXAMPLE` are one entry.
pub fn normalize_address(raw: &str) -> Result<String, AddressError> {
    Ok(parse_recipient(raw)?.dedup_key())
}

/// KV key of an address's suppression: a hash, because KV keys cannot hold every character
/// an address can (`+`, `"`, UTF-8), and fixed-size whatever the address.
pub fn suppression_key(normalized: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, normalized.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{SUPPRESSION_KEY_PREFIX}{hex}")
}

const SUPPRESSION_KEY_PREFIX: &str = "s.";

/// The 128 bits a [`suppression_key`] spells (`s.` and 32 hex digits): what ingest and the
/// sender keep in memory for a suppression check without a broker round trip. `None` for any
/// other key.
pub fn suppression_key_bits(key: &str) -> Option<u128> {
    let hex = key.strip_prefix(SUPPRESSION_KEY_PREFIX)?;
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// The in-memory key of an address; `None` for an address that does not parse (it cannot be
/// on the list either: every entry is normalised).
pub fn address_key_bits(raw: &str) -> Option<u128> {
    suppression_key_bits(&suppression_key(&normalize_address(raw).ok()?))
}

/// What an unsubscribe token says: this address asked to leave, from this campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeClaim {
    #[serde(rename = "c")]
    pub campaign: String,
    #[serde(rename = "a")]
    pub address: String,
}

/// A token that was not made with our secret, or was altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the unsubscribe link is malformed")]
    Malformed,
    #[error("the unsubscribe link is not ours or was altered")]
    BadSignature,
}

/// Signs and checks unsubscribe tokens with a secret every ingest instance shares (read from
/// a file, never from a URL or a flag, never logged). `Debug` shows no key.
#[derive(Clone)]
pub struct UnsubscribeKey(hmac::Key);

impl fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnsubscribeKey(…)")
    }
}

impl UnsubscribeKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// `base64url(claim JSON) . base64url(HMAC-SHA256)`: readable by us only in the sense of
    /// being checkable; the address in it is no secret from its own recipient.
    pub fn sign(&self, claim: &UnsubscribeClaim) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claim).expect("a claim serialises"));
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claim of a token made with this key; the comparison is constant-time (ring).
    pub fn verify(&self, token: &str) -> Result<UnsubscribeClaim, TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claim: UnsubscribeClaim =
            serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        validate_campaign_id(&claim.campaign).map_err(|_| TokenError::Malformed)?;
        Ok(claim)
    }
}

/// Prefix of a test send's campaign id: the monitor counts no progress for these, and a
/// campaign submitted by a user may not take one.
pub const TEST_CAMPAIGN_PREFIX: &str = "t-";

/// Whether `campaign` is a test send's id.
pub fn is_test_campaign(campaign: &str) -> bool {
    campaign.starts_with(TEST_CAMPAIGN_PREFIX)
}

/// Local-part prefix of a VERP envelope sender.
const VERP_PREFIX: &str = "bounces+";

/// The per-recipient envelope sender: `bounces+<campaign>.<seq>@<bounce domain>`. A bounce
/// sent back to it names the campaign and recipient whatever the DSN says.
pub fn verp_address(campaign: &str, seq: u64, bounce_domain: &str) -> String {
    format!("{VERP_PREFIX}{campaign}.{seq}@{bounce_domain}")
}

/// The campaign and recipient sequence of a VERP address; `None` for any other address.
pub fn parse_verp(address: &str) -> Option<(String, u64)> {
    let local = address.trim().trim_matches(['<', '>']).rsplit_once('@')?.0;
    let rest = local.strip_prefix(VERP_PREFIX)?;
    let (campaign, seq) = rest.rsplit_once('.')?;
    validate_campaign_id(campaign).ok()?;
    Some((campaign.to_string(), seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_one_form_and_one_key() {
        let a = normalize_address("Ann@Bücher.Example").unwrap();
        let b = normalize_address("Ann@xn--bcher-kva.EXAMPLE").unwrap();
        assert_eq!(a, b);
        assert_eq!(suppression_key(&a), suppression_key(&b));
        assert_ne!(
            suppression_key(&normalize_address("ann@example.com").unwrap()),
            suppression_key(&normalize_address("bob@example.com").unwrap())
        );
        assert!(suppression_key(&a)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.'));
        assert!(normalize_address("not an address").is_err());
        let bits = suppression_key_bits(&suppression_key(&a)).unwrap();
        assert_eq!(address_key_bits("Ann@Bücher.Example"), Some(bits));
        assert_eq!(suppression_key_bits("x.00"), None);
        assert_eq!(suppression_key_bits("s.zz"), None);
        assert_eq!(address_key_bits("not an address"), None);
    }

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let key = UnsubscribeKey::new(b"a secret of at least some length");
        let claim = UnsubscribeClaim {
            campaign: "c1".into(),
            address: "josé@exämple.de".into(),
        };
        let t = key.sign(&claim);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_eq!(key.verify(&t).unwrap(), claim);
        // Another key, an altered body, a truncated tag, garbage.
        let other = UnsubscribeKey::new(b"another secret");
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));
        let (body, tag) = t.split_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"c":"c1","a":"victim@example.com"}"#);
        assert_eq!(
            key.verify(&format!("{forged_body}.{tag}")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key.verify(&format!("{body}.{}", &tag[..12])),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify("garbage"), Err(TokenError::Malformed));
        assert!(format!("{key:?}").contains('…'));
    }

    #[test]
    fn verp_round_trips() {
        let a = verp_address("c1-x_y", 42, "bounces.example.com");
        assert_eq!(a, "bounces+c1-x_y.42@bounces.example.com");
        assert_eq!(parse_verp(&a), Some(("c1-x_y".into(), 42)));
        assert_eq!(parse_verp(&format!("<{a}>")), Some(("c1-x_y".into(), 42)));
        assert_eq!(parse_verp("ann@example.com"), None);
        assert_eq!(parse_verp("bounces+c.1.x@b.example"), None);
        assert_eq!(parse_verp("bounces+c*.1@b.example"), None);
    }
}

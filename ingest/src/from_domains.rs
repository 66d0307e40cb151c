//! `--allowed-from-domains a.com,b.com`: the domains a campaign's From may use. A campaign
//! from anywhere else is refused (422, field `from`) before anything is stored, so a leaked
//! token cannot send as someone else's domain through the operator's relay. Domains match
//! exactly (a subdomain is listed on its own), compared in their ASCII (IDNA) form.

use std::str::FromStr;

use jetmail_common::address::parse_domain;
use jetmail_common::api::Field;

use crate::publish::SubmitError;

/// The allowed From domains, in ASCII lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedFromDomains(Vec<String>);

/// A listed domain that is not one.
#[derive(Debug, thiserror::Error)]
#[error("--allowed-from-domains: {domain:?} is not a domain name")]
pub struct BadDomain {
    pub domain: String,
}

impl AllowedFromDomains {
    /// `domains` as given on the command line (empty entries ignored); `None` when none.
    pub fn new(domains: &[String]) -> Result<Option<Self>, BadDomain> {
        let mut out = Vec::new();
        for d in domains.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            let ascii = parse_domain(d).map_err(|_| BadDomain {
                domain: d.to_string(),
            })?;
            out.push(ascii.to_ascii_lowercase());
        }
        Ok((!out.is_empty()).then_some(AllowedFromDomains(out)))
    }

    /// Refuses a From whose domain is not listed.
    pub fn check(&self, from: &str) -> Result<(), SubmitError> {
        let mailbox = lettre::message::Mailbox::from_str(from.trim())
            .map_err(|e| SubmitError::invalid(Field::From, e))?;
        let domain = parse_domain(mailbox.email.domain())
            .map(|d| d.to_ascii_lowercase())
            .map_err(|e| SubmitError::invalid(Field::From, e))?;
        if self.0.contains(&domain) {
            return Ok(());
        }
        Err(SubmitError::invalid(
            Field::From,
            format!(
                "this ingest sends only from {}; {domain} is not allowed",
                self.0.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_domains_pass() {
        let allowed = AllowedFromDomains::new(&["Example.com".into(), " ".into(), "b.org".into()])
            .unwrap()
            .unwrap();
        assert!(allowed.check("News <news@example.COM>").is_ok());
        assert!(allowed.check("x@b.org").is_ok());
        for from in ["x@evil.example", "x@sub.example.com", "x@example.com.evil"] {
            let e = allowed.check(from).unwrap_err();
            assert!(
                matches!(
                    e,
                    SubmitError::Invalid {
                        field: Field::From,
                        ..
                    }
                ),
                "{from}"
            );
        }
        assert!(AllowedFromDomains::new(&[]).unwrap().is_none());
        assert!(AllowedFromDomains::new(&["not a domain".into()]).is_err());
    }
}

//! Recipient addresses: validation and the domain token used in subjects.

use std::str::FromStr;

/// Why an address was refused. The text is shown to the person who submitted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address contains whitespace or a control character")]
    Whitespace,
    #[error("missing '@'")]
    MissingAt,
    #[error("more than one '@' outside quotes")]
    MultipleAt,
    #[error("empty local part")]
    EmptyLocal,
    #[error("empty domain")]
    EmptyDomain,
    #[error("domain has no dot (not a public mail domain)")]
    DomainWithoutDot,
    #[error("address longer than 254 characters")]
    TooLong,
    #[error("invalid address: {0}")]
    Invalid(String),
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
}

/// A validated recipient address, as it will be given to SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as it will be written in RCPT TO and the `To` header (local part kept as
    /// given, domain lower-cased).
    pub address: String,
    /// The domain in ASCII (IDNA) form, lower-case.
    pub ascii_domain: String,
}

impl Recipient {
    /// The key under which duplicates are detected: local part as given (RFC 5321 makes it
    /// case-sensitive), domain case-folded.
    pub fn dedup_key(&self) -> String {
        let local = self.address.rsplit_once('@').map(|(l, _)| l).unwrap_or("");
        format!("{local}@{}", self.ascii_domain)
    }
}

/// Validates one address. lettre's parser (which follows RFC 5321/6531 and accepts
/// internationalised local parts and domains) decides what is valid; the extra checks refuse
/// what it accepts but no relay would deliver (no dot in the domain, whitespace, over-length).
pub fn parse_recipient(raw: &str) -> Result<Recipient, AddressError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AddressError::Whitespace);
    }
    if s.len() > 254 {
        return Err(AddressError::TooLong);
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err(AddressError::MissingAt);
    };
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if !local.starts_with('"') && local.contains('@') {
        return Err(AddressError::MultipleAt);
    }
    let ascii_domain = idna::domain_to_ascii_strict(domain)
        .map_err(|_| AddressError::InvalidDomain(domain.to_string()))?;
    if !ascii_domain.contains('.') {
        return Err(AddressError::DomainWithoutDot);
    }
    if ascii_domain
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err(AddressError::InvalidDomain(domain.to_string()));
    }
    // Built by hand, not with `format!`: ingest validates every recipient twice (once per
    // pass over a file), and the formatting machinery was a quarter of this function's cost.
    let domain = domain.to_lowercase();
    let mut address = String::with_capacity(local.len() + 1 + domain.len());
    address.push_str(local);
    address.push('@');
    address.push_str(&domain);
    lettre::Address::from_str(&address).map_err(|e| AddressError::Invalid(e.to_string()))?;
    Ok(Recipient {
        address,
        ascii_domain,
    })
}

/// Validates a bare domain (a limit's, a bounce domain's): ASCII (IDNA) form, lower-case,
/// with a dot, no empty or hyphen-edged label.
pub fn parse_domain(raw: &str) -> Result<String, AddressError> {
    let d = raw.trim().trim_end_matches('.');
    if d.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if d.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(AddressError::InvalidDomain(raw.to_string()));
    }
    let ascii = idna::domain_to_ascii_strict(d)
        .map_err(|_| AddressError::InvalidDomain(raw.to_string()))?;
    if !ascii.contains('.') {
        return Err(AddressError::DomainWithoutDot);
    }
    if ascii
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err(AddressError::InvalidDomain(raw.to_string()));
    }
    Ok(ascii)
}

/// The domain as one subject token: lower-case ASCII with every `.` written as `_`, so
/// `mail.outbox.<campaign>.<domain>` keeps a fixed number of tokens.
pub fn domain_token(ascii_domain: &str) -> String {
    ascii_domain.to_ascii_lowercase().replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_international_addresses() {
        for a in [
            "ann@example.com",
            "Ann.Lee+tag@Example.COM",
            "josé@exämple.de",
            "用户@例子.广告",
        ] {
            assert!(parse_recipient(a).is_ok(), "{a} should be valid");
        }
        let r = parse_recipient("user@Bücher.Example").unwrap();
        assert_eq!(r.ascii_domain, "xn--bcher-kva.example");
        assert_eq!(domain_token(&r.ascii_domain), "xn--bcher-kva_example");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for a in [
            "",
            "plain",
            "@example.com",
            "user@",
            "a@b@example.com",
            "user@localhost",
            "us er@example.com",
            "user@exa mple.com",
            "user@-example.com",
            "user@example..com",
            "user.@example.com",
            ".user@example.com",
            "us..er@example.com",
            "user@example.com\r\nBcc: x@y.z",
            "user@[not-an-ip]",
            "user@example.com.",
            "(comment)@example.com",
        ] {
            assert!(parse_recipient(a).is_err(), "{a:?} should be refused");
        }
    }
}

//! Sending limits: what an operator sets (`jetmail-ingest limits set`), stored in the
//! `mail_limits` bucket so that every sender follows the same ones and a change reaches them
//! through a KV watch. A limit has a *scope*: the whole fleet (`global`), a group of domains
//! that share one budget (gmail.com and googlemail.com), or one campaign (`--rate` on submit).
//! How a scope's budget is shared without a central counter is [`crate::budget`]'s job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::address::{domain_token, parse_domain, AddressError};
use crate::topology::validate_campaign_id;

/// The most a rate may say: above it a limit is no limit, and the budget's arithmetic stays
/// exact in microseconds.
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
/// A 421 or 4.7.x reply halves a scope's rate for this long by default, then it recovers one
/// halving per cool-down.
pub const DEFAULT_COOLDOWN_MS: u64 = 60_000;
/// At most this many halvings: a scope never drops below 1/16 of its configured rate.
pub const MAX_BACKOFF_LEVEL: u32 = 4;

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Per {
    #[serde(rename = "s")]
    Second,
    #[serde(rename = "m")]
    Minute,
    #[serde(rename = "h")]
    Hour,
}

impl Per {
    fn seconds(self) -> f64 {
        match self {
            Per::Second => 1.0,
            Per::Minute => 60.0,
            Per::Hour => 3600.0,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        }
    }
}

/// `N/s`, `N/m` or `N/h`, N a whole number of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    pub per: Per,
}

/// Why a rate was refused; shown to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("rate {0:?}: expected N/s, N/m or N/h (e.g. 25/s)")]
    Format(String),
    #[error("rate {0:?}: N must be a whole number of at least 1")]
    Count(String),
    #[error("rate {0:?}: the unit must be s, m or h")]
    Unit(String),
    #[error("rate {0:?}: above the most a limit may say ({MAX_RATE_PER_SECOND}/s)")]
    TooHigh(String),
}

impl Rate {
    pub fn per_second(self) -> f64 {
        self.count as f64 / self.per.seconds()
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, RateError> {
        let t = s.trim();
        let (n, unit) = t
            .split_once('/')
            .ok_or_else(|| RateError::Format(s.to_string()))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            _ => return Err(RateError::Unit(s.to_string())),
        };
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| RateError::Count(s.to_string()))?;
        let rate = Rate { count, per };
        if rate.per_second() > MAX_RATE_PER_SECOND {
            return Err(RateError::TooHigh(s.to_string()));
        }
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_str())
    }
}

/// Who a limit applies to: one token, usable as a KV key part, a subject token and a consumer
/// name. The prefixes keep the three kinds apart (a domain token never collides with a
/// campaign's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scope {
    /// Every send of the fleet.
    Global,
    /// A group of domains, named after the first one's token (`d-gmail_com`).
    Domains(String),
    /// One campaign (`c-<campaign id>`).
    Campaign(String),
}

const GLOBAL_TOKEN: &str = "global";
const DOMAINS_PREFIX: &str = "d-";
const CAMPAIGN_PREFIX: &str = "c-";

/// A scope name that is none of `global`, `d-<domain token>`, `c-<campaign id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?}: expected `global`, `d-<domain>` or `c-<campaign id>`")]
pub struct ScopeError(pub String);

impl Scope {
    /// The scope of a group of domains (already validated, ASCII): named after the first.
    pub fn for_domains(first_ascii_domain: &str) -> Self {
        Scope::Domains(domain_token(first_ascii_domain))
    }

    pub fn token(&self) -> String {
        match self {
            Scope::Global => GLOBAL_TOKEN.to_string(),
            Scope::Domains(t) => format!("{DOMAINS_PREFIX}{t}"),
            Scope::Campaign(c) => format!("{CAMPAIGN_PREFIX}{c}"),
        }
    }

    pub fn parse(token: &str) -> Result<Self, ScopeError> {
        let bad = || ScopeError(token.to_string());
        if token == GLOBAL_TOKEN {
            return Ok(Scope::Global);
        }
        if let Some(d) = token.strip_prefix(DOMAINS_PREFIX) {
            let ok = !d.is_empty()
                && d.contains('_')
                && d.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            return ok.then(|| Scope::Domains(d.to_string())).ok_or_else(bad);
        }
        if let Some(c) = token.strip_prefix(CAMPAIGN_PREFIX) {
            return validate_campaign_id(c)
                .map(|_| Scope::Campaign(c.to_string()))
                .map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.token()
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeError;
    fn try_from(s: String) -> Result<Self, ScopeError> {
        Scope::parse(&s)
    }
}

/// One limit, key `limit.<scope>` in `mail_limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitSpec {
    #[serde(default = "crate::wire::wire_version")]
    pub v: u32,
    pub scope: Scope,
    /// The domains sharing this budget (ASCII, lower-case); empty for global and campaigns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    pub rate: Rate,
    /// Simultaneous SMTP sessions to these domains across the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How long a 421 / 4.7.x back-off halving lasts before the rate recovers a step.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
}

fn default_cooldown_ms() -> u64 {
    DEFAULT_COOLDOWN_MS
}

/// Why a limit was refused; nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error("domain {domain:?}: {source}")]
    Domain {
        domain: String,
        #[source]
        source: AddressError,
    },
    #[error("--concurrency must be at least 1")]
    Concurrency,
    #[error("domain {0} is listed twice")]
    DuplicateDomain(String),
}

impl LimitSpec {
    /// A checked limit. `domains` empty means the global limit; several share one budget.
    pub fn new(
        domains: &[String],
        rate: &str,
        concurrency: Option<u32>,
        cooldown_ms: Option<u64>,
    ) -> Result<Self, LimitError> {
        let rate: Rate = rate.parse()?;
        if concurrency == Some(0) {
            return Err(LimitError::Concurrency);
        }
        let mut ascii = Vec::with_capacity(domains.len());
        for d in domains {
            let a = parse_domain(d).map_err(|source| LimitError::Domain {
                domain: d.clone(),
                source,
            })?;
            if ascii.contains(&a) {
                return Err(LimitError::DuplicateDomain(a));
            }
            ascii.push(a);
        }
        let scope = match ascii.first() {
            Some(first) => Scope::for_domains(first),
            None => Scope::Global,
        };
        Ok(Self {
            v: crate::wire::WIRE_VERSION,
            scope,
            domains: ascii,
            rate,
            concurrency,
            cooldown_ms: cooldown_ms.unwrap_or(DEFAULT_COOLDOWN_MS),
            updated_ms: crate::now_ms(),
        })
    }
}

/// A scope's fleet-wide back-off after 421 / 4.7.x replies, key `backoff.<scope>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Backoff {
    /// Halvings in force when it was written.
    pub level: u32,
    /// When the last halving happened.
    pub since_ms: u64,
}

impl Backoff {
    /// Halvings still in force at `now_ms`: one is undone per cool-down since the last.
    pub fn level_at(&self, now_ms: u64, cooldown_ms: u64) -> u32 {
        let recovered = now_ms.saturating_sub(self.since_ms) / cooldown_ms.max(1);
        self.level
            .saturating_sub(recovered.min(u32::MAX as u64) as u32)
    }

    /// The state after one more 421 at `now_ms`. Replies that arrive within a second of the
    /// last halving are the same congestion seen by several sends: they do not halve again.
    pub fn after_refusal(&self, now_ms: u64, cooldown_ms: u64) -> Backoff {
        let level = self.level_at(now_ms, cooldown_ms);
        if level > 0 && now_ms.saturating_sub(self.since_ms) < 1_000 {
            return Backoff {
                level,
                since_ms: self.since_ms,
            };
        }
        Backoff {
            level: (level + 1).min(MAX_BACKOFF_LEVEL),
            since_ms: now_ms,
        }
    }

    /// The rate a scope may send at: the configured one, halved per level in force.
    pub fn effective_per_second(&self, rate: Rate, now_ms: u64, cooldown_ms: u64) -> f64 {
        rate.per_second() / f64::from(1u32 << self.level_at(now_ms, cooldown_ms))
    }
}

/// How often a sender recomputes its share of a fleet-wide session cap from the live senders.
pub const SHARE_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// The share of a fleet-wide session cap one sender may use: the cap split evenly across the
/// live senders, the remainder to the first ones by id, so the shares add up to the cap.
/// A sender not in `live` (it just started) counts itself in.
pub fn concurrency_share(cap: u32, me: &str, live: &[String]) -> u32 {
    let mut ids: Vec<&str> = live.iter().map(String::as_str).collect();
    if !ids.contains(&me) {
        ids.push(me);
    }
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len() as u32;
    let i = ids.iter().position(|id| *id == me).unwrap_or(0) as u32;
    cap / n + u32::from(i < cap % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse_nonsense() {
        let r: Rate = "25/s".parse().unwrap();
        assert_eq!(r.per_second(), 25.0);
        assert_eq!(r.to_string(), "25/s");
        assert_eq!("120/m".parse::<Rate>().unwrap().per_second(), 2.0);
        assert_eq!("3600/h".parse::<Rate>().unwrap().per_second(), 1.0);
        assert!(matches!("0/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("-1/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("1.5/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!(
            "10/fortnight".parse::<Rate>(),
            Err(RateError::Unit(_))
        ));
        assert!(matches!("fast".parse::<Rate>(), Err(RateError::Format(_))));
        assert!(matches!(
            "2000000/s".parse::<Rate>(),
            Err(RateError::TooHigh(_))
        ));
    }

    #[test]
    fn scopes_round_trip_and_never_collide() {
        for s in [
            Scope::Global,
            Scope::for_domains("gmail.com"),
            Scope::Campaign("c1-x".into()),
        ] {
            assert_eq!(Scope::parse(&s.token()).unwrap(), s);
        }
        assert_eq!(Scope::for_domains("gmail.com").token(), "d-gmail_com");
        assert!(Scope::parse("gmail_com").is_err());
        assert!(Scope::parse("d-").is_err());
        assert!(Scope::parse("c-a.b").is_err());
        assert!(Scope::parse("d-Gmail_com").is_err());
    }

    #[test]
    fn limits_check_their_domains() {
        let l = LimitSpec::new(
            &["Gmail.com".into(), "googlemail.com".into()],
            "25/s",
            Some(10),
            None,
        )
        .unwrap();
        assert_eq!(l.scope, Scope::Domains("gmail_com".into()));
        assert_eq!(l.domains, vec!["gmail.com", "googlemail.com"]);
        assert!(matches!(
            LimitSpec::new(&["not a domain".into()], "1/s", None, None),
            Err(LimitError::Domain { .. })
        ));
        assert!(matches!(
            LimitSpec::new(&["localhost".into()], "1/s", None, None),
            Err(LimitError::Domain { .. })
        ));
        assert!(matches!(
            LimitSpec::new(&[], "1/s", Some(0), None),
            Err(LimitError::Concurrency)
        ));
        assert!(matches!(
            LimitSpec::new(&["a.com".into(), "A.com".into()], "1/s", None, None),
            Err(LimitError::DuplicateDomain(_))
        ));
        let g = LimitSpec::new(&[], "150/s", None, None).unwrap();
        assert_eq!(g.scope, Scope::Global);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<LimitSpec>(&json).unwrap(), g);
    }

    #[test]
    fn backoff_halves_and_recovers_step_by_step() {
        let rate: Rate = "100/s".parse().unwrap();
        let b = Backoff::default().after_refusal(10_000, 60_000);
        assert_eq!(b.level, 1);
        assert_eq!(b.effective_per_second(rate, 10_000, 60_000), 50.0);
        // The same burst of refusals does not halve twice.
        assert_eq!(b.after_refusal(10_500, 60_000).level, 1);
        let b2 = b.after_refusal(12_000, 60_000);
        assert_eq!(b2.effective_per_second(rate, 12_000, 60_000), 25.0);
        assert_eq!(b2.effective_per_second(rate, 72_000, 60_000), 50.0);
        assert_eq!(b2.effective_per_second(rate, 132_000, 60_000), 100.0);
        let mut deep = Backoff::default();
        for i in 0..10 {
            deep = deep.after_refusal(i * 2_000, 60_000);
        }
        assert_eq!(deep.level, MAX_BACKOFF_LEVEL);
    }

    #[test]
    fn concurrency_shares_add_up_to_the_cap() {
        let live: Vec<String> = ["s1", "s2", "s3"].iter().map(|s| s.to_string()).collect();
        let total: u32 = live.iter().map(|me| concurrency_share(10, me, &live)).sum();
        assert_eq!(total, 10);
        assert_eq!(concurrency_share(10, "s1", &live), 4);
        assert_eq!(concurrency_share(2, "s3", &live), 0);
        assert_eq!(concurrency_share(5, "new", &[]), 5);
    }
}

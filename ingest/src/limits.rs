//! Sending limits as operators change them (`jetmail-ingest limits`, `/v1/limits`): checked
//! into a [`LimitSpec`], written to `mail_limits` under its scope's key (the senders watch
//! those keys and follow a change within a second), listed with the rate in force after a
//! fleet-wide back-off, removed. A domain belongs to one limit at most, so a sender never has
//! two budgets to choose from for one recipient.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use jetmail_common::address::parse_domain;
use jetmail_common::api::{Field, LimitRequest, LimitView};
use jetmail_common::config::parse_duration;
use jetmail_common::limits::{Backoff, LimitError, LimitSpec, Scope};
use jetmail_common::now_ms;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, LimitsKey, Topology};

/// Why a limit change was refused or failed. Nothing is stored by a refused one.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// A bad rate, domain or concurrency ([`LimitsError::field`] says which).
    #[error(transparent)]
    Invalid(#[from] LimitError),
    #[error("cooldown {0:?}: expected a duration of at least 1s, such as 60s or 5m")]
    Cooldown(String),
    /// `PUT /v1/limits/{scope}` whose path names another scope than its body gives.
    #[error("the path names scope {path:?} but the body is the limit of {body}")]
    ScopeMismatch { path: String, body: Scope },
    #[error("no limit {0}")]
    NotFound(String),
    /// The domain is listed by another limit: change or remove that one first.
    #[error("domain {domain} is already limited by {scope}")]
    DomainTaken { domain: String, scope: Scope },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LimitsError {
    /// The part of the request at fault, when one is.
    pub fn field(&self) -> Option<Field> {
        match self {
            LimitsError::Invalid(LimitError::Rate(_)) => Some(Field::Rate),
            LimitsError::Invalid(LimitError::Domain { .. } | LimitError::DuplicateDomain(_)) => {
                Some(Field::Domains)
            }
            LimitsError::Invalid(LimitError::Concurrency) => Some(Field::Concurrency),
            LimitsError::Cooldown(_) => Some(Field::Cooldown),
            LimitsError::ScopeMismatch { .. } => Some(Field::Scope),
            LimitsError::DomainTaken { .. } => Some(Field::Domains),
            LimitsError::NotFound(_) | LimitsError::Store(_) => None,
        }
    }
}

/// Checks a request into the limit it describes.
pub fn spec(req: &LimitRequest) -> Result<LimitSpec, LimitsError> {
    let cooldown_ms = match req.cooldown.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => Some(
            parse_duration(c)
                .ok()
                .filter(|d| *d >= Duration::from_secs(1))
                .ok_or_else(|| LimitsError::Cooldown(c.to_string()))?
                .as_millis() as u64,
        ),
    };
    let domains: Vec<String> = req
        .domains
        .iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    Ok(LimitSpec::new(
        &domains,
        &req.rate,
        req.concurrency,
        cooldown_ms,
    )?)
}

/// Stores `spec` under its scope (replacing that scope's limit) and answers it as listed.
pub async fn set(topo: &Topology, spec: &LimitSpec) -> Result<LimitView, LimitsError> {
    for other in load_all(topo).await? {
        if other.scope == spec.scope {
            continue;
        }
        if let Some(d) = spec.domains.iter().find(|d| other.domains.contains(d)) {
            return Err(LimitsError::DomainTaken {
                domain: d.clone(),
                scope: other.scope,
            });
        }
    }
    let bytes = Bytes::from(serde_json::to_vec(spec).expect("a limit always serialises"));
    topo.limits
        .put(topology::limit_key(&spec.scope), bytes)
        .await
        .map_err(StoreError::broker)?;
    tracing::info!(scope = %spec.scope, rate = %spec.rate, "limit set");
    let backoff = load_backoff(topo, &spec.scope).await?;
    Ok(view(spec, backoff, now_ms()))
}

/// Every limit with its effective rate, the global one first.
pub async fn list(topo: &Topology) -> Result<Vec<LimitView>, LimitsError> {
    let now = now_ms();
    let mut out = Vec::new();
    for spec in load_all(topo).await? {
        let backoff = load_backoff(topo, &spec.scope).await?;
        out.push(view(&spec, backoff, now));
    }
    Ok(out)
}

/// Removes the limit of `scope` and answers what it was.
pub async fn remove(topo: &Topology, scope: &Scope) -> Result<LimitSpec, LimitsError> {
    let spec = load(topo, scope)
        .await?
        .ok_or_else(|| LimitsError::NotFound(scope.token()))?;
    topo.limits
        .delete(topology::limit_key(scope))
        .await
        .map_err(StoreError::broker)?;
    tracing::info!(scope = %scope, "limit removed");
    Ok(spec)
}

/// The scope of the limit that lists `domain`.
pub async fn scope_of_domain(topo: &Topology, domain: &str) -> Result<Scope, LimitsError> {
    let ascii = parse_domain(domain).map_err(|source| LimitError::Domain {
        domain: domain.to_string(),
        source,
    })?;
    load_all(topo)
        .await?
        .into_iter()
        .find(|l| l.domains.contains(&ascii))
        .map(|l| l.scope)
        .ok_or_else(|| LimitsError::NotFound(format!("for domain {ascii}")))
}

/// What the list shows of one limit at `now`.
pub fn view(spec: &LimitSpec, backoff: Backoff, now: u64) -> LimitView {
    LimitView {
        scope: spec.scope.clone(),
        domains: spec.domains.clone(),
        rate: spec.rate.to_string(),
        per_second: spec.rate.per_second(),
        effective_per_second: backoff.effective_per_second(spec.rate, now, spec.cooldown_ms),
        backoff_level: backoff.level_at(now, spec.cooldown_ms),
        concurrency: spec.concurrency,
        cooldown_ms: spec.cooldown_ms,
        updated_ms: spec.updated_ms,
    }
}

async fn load(topo: &Topology, scope: &Scope) -> Result<Option<LimitSpec>, StoreError> {
    match topo.limits.entry(topology::limit_key(scope)).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                what: format!("limit {scope}"),
                source,
            }),
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::broker(e)),
    }
}

/// Every readable limit, sorted by scope (global first). One that cannot be decoded is left
/// out and logged, so that it does not hide the others.
async fn load_all(topo: &Topology) -> Result<Vec<LimitSpec>, StoreError> {
    let keys: Vec<String> = match topo.limits.keys().await {
        Ok(keys) => keys.try_collect().await.map_err(StoreError::broker)?,
        Err(e) => return Err(StoreError::broker(e)),
    };
    let mut out = Vec::new();
    for key in keys {
        let Some(LimitsKey::Limit(scope)) = LimitsKey::parse(&key) else {
            continue;
        };
        match load(topo, &scope).await {
            Ok(Some(spec)) => out.push(spec),
            Ok(None) => {}
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(scope = %scope, error = %e, "limit left out of the list")
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.scope.cmp(&b.scope));
    Ok(out)
}

async fn load_backoff(topo: &Topology, scope: &Scope) -> Result<Backoff, StoreError> {
    match topo.limits.get(topology::backoff_key(scope)).await {
        // An unreadable back-off is no back-off: the senders read it the same way.
        Ok(Some(b)) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
        Ok(None) => Ok(Backoff::default()),
        Err(e) => Err(StoreError::broker(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(domains: &[&str], rate: &str, concurrency: Option<u32>, cooldown: &str) -> LimitRequest {
        LimitRequest {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            rate: rate.into(),
            concurrency,
            cooldown: Some(cooldown.into()),
        }
    }

    #[test]
    fn each_refusal_names_its_field() {
        let field = |r: LimitRequest| spec(&r).unwrap_err().field();
        assert_eq!(field(req(&[], "0/s", None, "")), Some(Field::Rate));
        assert_eq!(field(req(&[], "-1/s", None, "")), Some(Field::Rate));
        assert_eq!(field(req(&[], "10/fortnight", None, "")), Some(Field::Rate));
        assert_eq!(
            field(req(&["not a domain"], "1/s", None, "")),
            Some(Field::Domains)
        );
        assert_eq!(
            field(req(&[], "1/s", Some(0), "")),
            Some(Field::Concurrency)
        );
        assert_eq!(field(req(&[], "1/s", None, "soon")), Some(Field::Cooldown));
        assert_eq!(field(req(&[], "1/s", None, "0s")), Some(Field::Cooldown));
    }

    #[test]
    fn a_good_request_names_its_scope_after_the_first_domain() {
        let s = spec(&req(
            &["Gmail.com", " googlemail.com"],
            "25/s",
            Some(5),
            "2m",
        ))
        .unwrap();
        assert_eq!(s.scope, Scope::for_domains("gmail.com"));
        assert_eq!(s.cooldown_ms, 120_000);
        let g = spec(&req(&[], "150/s", None, "")).unwrap();
        assert_eq!(g.scope, Scope::Global);
    }

    #[test]
    fn the_view_shows_the_rate_in_force() {
        let s = spec(&req(&["gmail.com"], "100/s", None, "60s")).unwrap();
        let b = Backoff::default().after_refusal(1_000, 60_000);
        let v = view(&s, b, 2_000);
        assert_eq!(
            (v.per_second, v.effective_per_second, v.backoff_level),
            (100.0, 50.0, 1)
        );
        assert_eq!(view(&s, b, 61_000).effective_per_second, 100.0);
    }
}

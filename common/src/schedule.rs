//! When a campaign may send: `--send-at` (nothing is delivered before it) and `--deadline`
//! (nothing is delivered after it; what is left then is dead-lettered as `expired`). Both are
//! written as RFC 3339 times or as durations: `+2h` for send-at counts from now, a bare
//! duration for the deadline counts from the send start.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A send-at more than this in the past is refused as a mistake; within it, it means "now".
pub const SEND_AT_PAST_TOLERANCE: Duration = Duration::from_secs(60);

/// Why a time was refused; shown to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0:?}: expected an RFC 3339 time (2026-12-01T09:00:00Z) or a duration (+2h)")]
    Format(String),
    #[error("send-at {0} is more than a minute in the past")]
    SendAtPast(String),
    #[error("the deadline ({deadline}) is not after the send start ({start})")]
    DeadlineBeforeStart { deadline: String, start: String },
}

/// Milliseconds since the epoch as RFC 3339, for messages and pages.
pub fn format_ms(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn parse_offset(s: &str) -> Option<Duration> {
    crate::config::parse_duration(s.strip_prefix('+').unwrap_or(s)).ok()
}

/// The send start and deadline of a campaign submitted at `now_ms`, checked together.
/// `send_at`: RFC 3339 or `+duration`; `deadline`: RFC 3339, or a duration after the start.
pub fn resolve(
    send_at: Option<&str>,
    deadline: Option<&str>,
    now_ms: u64,
) -> Result<(Option<u64>, Option<u64>), ScheduleError> {
    let send_at_ms = match send_at.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let at = match parse_rfc3339(s) {
                Some(at) => at,
                None if s.starts_with('+') => {
                    now_ms
                        + parse_offset(s)
                            .ok_or_else(|| ScheduleError::Format(s.into()))?
                            .as_millis() as u64
                }
                None => return Err(ScheduleError::Format(s.into())),
            };
            if at + (SEND_AT_PAST_TOLERANCE.as_millis() as u64) < now_ms {
                return Err(ScheduleError::SendAtPast(s.into()));
            }
            Some(at)
        }
    };
    let start = send_at_ms.unwrap_or(now_ms).max(now_ms);
    let deadline_ms = match deadline.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let at = match parse_rfc3339(s) {
                Some(at) => at,
                None => {
                    start
                        + parse_offset(s)
                            .ok_or_else(|| ScheduleError::Format(s.into()))?
                            .as_millis() as u64
                }
            };
            if at <= start {
                return Err(ScheduleError::DeadlineBeforeStart {
                    deadline: format_ms(at),
                    start: format_ms(start),
                });
            }
            Some(at)
        }
    };
    Ok((send_at_ms, deadline_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn send_at_and_deadline_resolve_together() {
        assert_eq!(resolve(None, None, NOW), Ok((None, None)));
        let (s, d) = resolve(Some("+2h"), Some("30m"), NOW).unwrap();
        assert_eq!(s, Some(NOW + 7_200_000));
        assert_eq!(d, Some(NOW + 7_200_000 + 1_800_000));
        let (s, _) = resolve(Some("2026-12-01T09:00:00Z"), None, NOW).unwrap();
        assert_eq!(format_ms(s.unwrap()), "2026-12-01T09:00:00Z");
        let (_, d) = resolve(None, Some("10m"), NOW).unwrap();
        assert_eq!(d, Some(NOW + 600_000));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(matches!(
            resolve(Some("tomorrow"), None, NOW),
            Err(ScheduleError::Format(_))
        ));
        assert!(matches!(
            resolve(Some("2020-01-01T00:00:00Z"), None, NOW),
            Err(ScheduleError::SendAtPast(_))
        ));
        assert!(matches!(
            resolve(Some("+2h"), Some(&format_ms(NOW + 3_600_000)), NOW),
            Err(ScheduleError::DeadlineBeforeStart { .. })
        ));
        // A minute in the past is "now".
        assert!(resolve(Some(&format_ms(NOW - 30_000)), None, NOW).is_ok());
    }
}

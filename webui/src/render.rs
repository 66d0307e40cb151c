//! HTML rendering: minijinja templates compiled into the binary, auto-escaped (every string a
//! person typed, a CSV column or an SMTP reply is text on the page, never markup), and the
//! static CSS and JavaScript. No front-end build step.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};

use crate::auth::CurrentSession;
use crate::AppState;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
    (
        "campaigns.html",
        include_str!("../templates/campaigns.html"),
    ),
    ("campaign.html", include_str!("../templates/campaign.html")),
    (
        "new_campaign.html",
        include_str!("../templates/new_campaign.html"),
    ),
    ("senders.html", include_str!("../templates/senders.html")),
    ("dead.html", include_str!("../templates/dead.html")),
];

const STYLE_CSS: &str = include_str!("../assets/style.css");
const APP_JS: &str = include_str!("../assets/app.js");

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Names end in .html, so minijinja's default callback escapes for HTML everywhere.
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
        }
        env.add_filter("utc", |ms: u64| format_utc(ms));
        env.add_filter("rate", |r: f64| format_rate(r));
        Self { env }
    }

    /// Renders `name` inside the common layout: navigation, the no-auth warning, the pending
    /// message, and the CSRF token every form includes.
    pub fn page(
        &self,
        app: &AppState,
        session: &CurrentSession,
        flash: Option<crate::auth::Flash>,
        name: &str,
        nav: &str,
        extra: Value,
    ) -> Html<String> {
        let flash = flash.or_else(|| app.sessions.take_flash(&session.id));
        let ctx = context! {
            open_access => app.open_access(),
            authenticated => session.authenticated,
            csrf => &session.csrf,
            nav => nav,
            flash => flash,
            ..extra
        };
        Html(self.render(name, ctx))
    }

    /// Renders a template; a failure is a bug in our templates, shown as a plain message.
    pub fn render(&self, name: &str, ctx: Value) -> String {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(template = name, error = %format!("{e:#}"), "template failed");
                "<!doctype html><title>error</title><p>This page could not be rendered.</p>"
                    .to_string()
            }
        }
    }
}

/// `2026-05-01 12:00:03 UTC` from milliseconds since the epoch (`-` for 0).
pub fn format_utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Messages per second with one decimal below 100.
pub fn format_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// `GET /static/style.css`.
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /static/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let _ = Templates::new();
    }

    #[test]
    fn formats_times_and_rates() {
        assert_eq!(format_utc(0), "-");
        assert_eq!(format_utc(1_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(format_utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(format_rate(12.345), "12.3");
        assert_eq!(format_rate(1234.4), "1234");
    }
}

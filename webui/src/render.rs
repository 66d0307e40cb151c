//! HTML rendering: minijinja templates compiled into the binary, auto-escaped (every string a
//! person typed, a CSV column or an SMTP reply is text on the page, never markup), and the
//! static CSS and JavaScript. No front-end build step.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};
use time::OffsetDateTime;

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
    ("limits.html", include_str!("../templates/limits.html")),
    (
        "suppressions.html",
        include_str!("../templates/suppressions.html"),
    ),
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

/// `2026-05-01 12:00:03 UTC` from milliseconds since the epoch (`-` for 0, the raw number
/// for a time past what a calendar date can say).
pub fn format_utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let Some(t) = i64::try_from(ms / 1000)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return format!("{ms} ms");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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
        assert_eq!(format_utc(4_102_444_800_999), "2100-01-01 00:00:00 UTC");
        assert_eq!(format_utc(u64::MAX), format!("{} ms", u64::MAX));
        assert_eq!(format_rate(12.345), "12.3");
        assert_eq!(format_rate(1234.4), "1234");
    }
}

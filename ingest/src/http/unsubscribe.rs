//! The public one-click unsubscribe routes (RFC 8058), kept in their own router because they
//! must stay reachable without the API's credentials: recipients' mail providers call them.
//!
//! - `POST /unsubscribe/{token}` (body `List-Unsubscribe=One-Click`, as the provider's
//!   button or our confirm form sends it) suppresses the token's address as `unsubscribed`.
//! - `GET /unsubscribe/{token}` only shows a page with a confirm button: link scanners and
//!   previews follow every link, so a GET never unsubscribes.
//!
//! A forged or altered token is answered 400 and changes nothing. Every text on the pages is
//! HTML-escaped, and the token in the URL is kept out of referrers and caches.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jetmail_common::api::route;

use super::ApiState;
use crate::unsubscribe::{self, UnsubscribeError};

/// The public routes. Whatever guards the API must not be layered on these.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(route::UNSUBSCRIBE, get(confirm_page).post(unsubscribe))
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}\
         button{{font-size:1rem;padding:.5rem 1rem}}</style></head><body><h1>{}</h1>{}</body></html>",
        escape(title),
        escape(title),
        body_html
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    // The token in the URL is a capability: no referrer, no cache, no framing, no scripts.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn refused(e: &UnsubscribeError) -> Response {
    match e {
        UnsubscribeError::Token(_) => page(
            StatusCode::BAD_REQUEST,
            "This unsubscribe link is not valid",
            "<p>The link is incomplete or was changed. Please use the link from the email itself.</p>",
        ),
        UnsubscribeError::NotConfigured => page(
            StatusCode::NOT_FOUND,
            "Unsubscribe links are not enabled here",
            "",
        ),
        UnsubscribeError::Suppress(err) => {
            tracing::warn!(error = %err, "unsubscribe failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again in a moment",
                "<p>Your request could not be recorded just now.</p>",
            )
        }
    }
}

/// `GET`: what would happen, and a button that POSTs the RFC 8058 body.
async fn confirm_page(State(state): State<Arc<ApiState>>, Path(token): Path<String>) -> Response {
    match unsubscribe::verify(state.unsubscribe.as_deref(), &token) {
        Ok(claim) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop sending emails to <strong>{}</strong>?</p>\
                 <form method=\"post\" action=\"\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                escape(&claim.address)
            ),
        ),
        Err(e) => refused(&e),
    }
}

/// `POST`: the one-click unsubscribe itself; no login, no cookie, idempotent.
async fn unsubscribe(State(state): State<Arc<ApiState>>, Path(token): Path<String>) -> Response {
    match unsubscribe::apply(&state.topo, state.unsubscribe.as_deref(), &token).await {
        Ok(entry) => {
            tracing::info!(campaign = ?entry.campaign, "one-click unsubscribe");
            page(
                StatusCode::OK,
                "You are unsubscribed",
                &format!(
                    "<p><strong>{}</strong> will not receive these emails any more.</p>",
                    escape(&entry.address)
                ),
            )
        }
        Err(e) => refused(&e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            super::escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

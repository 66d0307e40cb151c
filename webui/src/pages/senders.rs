//! The sender health map, live from `mail_senders`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use minijinja::context;

use crate::auth::CurrentSession;
use crate::AppState;

/// `GET /senders`.
pub async fn page(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
) -> Response {
    let senders = app.hub.senders();
    app.templates
        .page(
            &app,
            &session,
            None,
            "senders.html",
            "senders",
            context! { senders => senders, missed_beats => jetmail_common::wire::MISSED_BEATS },
        )
        .into_response()
}

//! The pages and forms. Each handler reads the live [`crate::live::Hub`] or asks ingest, and
//! renders a template; every form checks the session's CSRF token before anything else.

pub mod campaigns;
pub mod dead;
pub mod limits;
pub mod new_campaign;
pub mod senders;
pub mod suppressions;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use crate::auth::CurrentSession;
use crate::AppState;

/// `GET /`: the campaign list is the home page.
pub async fn index() -> Redirect {
    Redirect::to("/campaigns")
}

/// A page saying what went wrong, with `status`.
pub fn error_page(
    app: &AppState,
    session: &CurrentSession,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let body = app.templates.page(
        app,
        session,
        None,
        "error.html",
        "",
        context! { title => title, message => message },
    );
    (status, body).into_response()
}

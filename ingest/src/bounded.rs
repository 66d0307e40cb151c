//! Rendering a campaign once before accepting it (submit, preview, test send): within the
//! fuel and size limits of [`jetmail_common::template`] and off the runtime thread, so that a
//! template that would run for hours is refused in a fraction of a second, naming its part,
//! and the API keeps answering meanwhile.

use jetmail_common::template::{try_render, Rendered};
use jetmail_common::wire::{CampaignSpec, Vars};

use crate::publish::{template_error, SubmitError};

/// Renders `spec` for one recipient; a template that does not compile, runs out of fuel or
/// writes too much is [`SubmitError::Invalid`] in the part at fault.
pub async fn render_once(
    spec: &CampaignSpec,
    email: &str,
    vars: &Vars,
) -> Result<Rendered, SubmitError> {
    try_render(spec.clone(), email.to_string(), vars.clone())
        .await
        .map_err(template_error)
}

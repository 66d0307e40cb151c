//! Campaign templates: subject, text and HTML are minijinja templates rendered per recipient
//! from its variables. Ingest compiles them to refuse a broken campaign at submit time; the
//! sender compiles them once per campaign and renders them per message.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::wire::{CampaignSpec, Vars};

const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "html";
/// Template variable holding the recipient's unsubscribe link.
pub const UNSUBSCRIBE_URL: &str = "unsubscribe_url";

/// A template that failed to compile or render, with minijinja's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct TemplateError {
    /// Which part: `subject`, `text` or `html`.
    pub part: &'static str,
    pub message: String,
}

/// The compiled templates of one campaign.
pub struct CampaignTemplates {
    env: Environment<'static>,
    has_html: bool,
}

/// One recipient's rendered message parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

fn compile_error(part: &'static str, e: minijinja::Error) -> TemplateError {
    // The detailed display includes the line and a caret under the problem.
    let mut message = e.to_string();
    if let Some(detail) = e.detail() {
        if !message.contains(detail) {
            message = format!("{message}: {detail}");
        }
    }
    TemplateError { part, message }
}

impl CampaignTemplates {
    /// Compiles every template of `spec`.
    pub fn compile(spec: &CampaignSpec) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // The HTML body escapes variables; subject and text are plain text.
        env.set_auto_escape_callback(|name| {
            if name == HTML {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // A variable missing from a recipient renders empty rather than failing the send.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.add_template_owned(SUBJECT, spec.subject.clone())
            .map_err(|e| compile_error(SUBJECT, e))?;
        env.add_template_owned(TEXT, spec.text.clone())
            .map_err(|e| compile_error(TEXT, e))?;
        if let Some(html) = &spec.html {
            env.add_template_owned(HTML, html.clone())
                .map_err(|e| compile_error(HTML, e))?;
        }
        Ok(Self {
            env,
            has_html: spec.html.is_some(),
        })
    }

    /// Renders the parts for one recipient. `email` is available to templates as `email`.
    pub fn render(&self, email: &str, vars: &Vars) -> Result<Rendered, TemplateError> {
        self.render_with_unsubscribe(email, vars, None)
    }

    /// Like [`CampaignTemplates::render`], with the recipient's one-click unsubscribe link
    /// available as `{{ unsubscribe_url }}` (it renders empty when there is none). It takes
    /// precedence over a recipient variable of that name.
    pub fn render_with_unsubscribe(
        &self,
        email: &str,
        vars: &Vars,
        unsubscribe_url: Option<&str>,
    ) -> Result<Rendered, TemplateError> {
        let mut ctx: std::collections::BTreeMap<&str, &str> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ctx.insert("email", email);
        if let Some(url) = unsubscribe_url {
            ctx.insert(UNSUBSCRIBE_URL, url);
        }
        let render = |part: &'static str| -> Result<String, TemplateError> {
            self.env
                .get_template(part)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| compile_error(part, e))
        };
        let subject = render(SUBJECT)?;
        if subject.chars().any(|c| c == '\r' || c == '\n') {
            return Err(TemplateError {
                part: SUBJECT,
                message: "rendered subject contains a line break (header injection refused)".into(),
            });
        }
        Ok(Rendered {
            subject,
            text: render(TEXT)?,
            html: if self.has_html {
                Some(render(HTML)?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subject: &str, html: Option<&str>) -> CampaignSpec {
        CampaignSpec {
            from: "news@example.com".into(),
            subject: subject.into(),
            text: "Hello {{ name }}".into(),
            html: html.map(str::to_string),
        }
    }

    #[test]
    fn renders_per_recipient_and_escapes_html_only() {
        let t =
            CampaignTemplates::compile(&spec("Hi {{ name }}", Some("<p>{{ name }}</p>"))).unwrap();
        let vars: Vars = [("name".to_string(), "<Ann & Bo>".to_string())].into();
        let r = t.render("a@example.com", &vars).unwrap();
        assert_eq!(r.subject, "Hi <Ann & Bo>");
        assert_eq!(r.text, "Hello <Ann & Bo>");
        assert_eq!(r.html.unwrap(), "<p>&lt;Ann &amp; Bo&gt;</p>");
    }

    #[test]
    fn broken_template_reports_its_part() {
        let err = CampaignTemplates::compile(&spec("Hi {{ name ", None))
            .err()
            .unwrap();
        assert_eq!(err.part, "subject");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn unsubscribe_url_is_a_template_variable() {
        let mut s = spec("Hi", Some("<a href=\"{{ unsubscribe_url }}\">leave</a>"));
        s.text = "Leave: {{ unsubscribe_url }}".into();
        let t = CampaignTemplates::compile(&s).unwrap();
        let r = t
            .render_with_unsubscribe("a@example.com", &Vars::new(), Some("https://x.example/u/T"))
            .unwrap();
        assert_eq!(r.text, "Leave: https://x.example/u/T");
        assert!(r.html.unwrap().contains("x.example"));
        // Without a link it renders empty, as before.
        assert_eq!(
            t.render("a@example.com", &Vars::new()).unwrap().text,
            "Leave: "
        );
    }

    #[test]
    fn line_break_in_rendered_subject_is_refused() {
        let t = CampaignTemplates::compile(&spec("Hi {{ name }}", None)).unwrap();
        let vars: Vars = [(
            "name".to_string(),
            "x\r\nBcc: victim@example.com".to_string(),
        )]
        .into();
        assert!(t.render("a@example.com", &vars).is_err());
    }
}

//! Campaign templates: subject, text and HTML are minijinja templates rendered per recipient
//! from its variables. Ingest compiles them to refuse a broken campaign at submit time; the
//! sender compiles them once per campaign and renders them per message.
//!
//! Rendering is bounded: each part may run at most [`RENDER_FUEL`] template instructions and
//! write at most [`MAX_PART_BYTES`], so a template that loops for hours or writes gigabytes
//! fails within a fraction of a second with [`TemplateErrorKind::TooMuchWork`] or
//! [`TemplateErrorKind::OutputTooLarge`]. Services still never render a template with logic
//! on a runtime thread: [`render_blocking`] runs a render on the blocking pool with
//! [`RENDER_TIMEOUT`]. The one exception is a mail merge of plain substitutions (see
//! [`is_plain_substitution`]), whose cost is linear in its size and which [`render_shared`]
//! renders in place: handing every message to another thread and back cost more CPU than the
//! render itself (measured: context switches were a quarter of a sender's profile).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use crate::wire::{CampaignSpec, Vars};

/// Template instructions one part's render may run (minijinja's fuel). A mail merge over a
/// few hundred rows uses thousands; running out takes about a tenth of a second.
pub const RENDER_FUEL: u64 = 2_000_000;
/// The most one rendered part (subject, text or HTML) may weigh.
pub const MAX_PART_BYTES: usize = 2 * 1024 * 1024;
/// How long a caller of [`render_blocking`] waits: far above what the fuel allows, so it
/// fires only when the blocking pool itself is starved.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The part a timed-out render names: all parts are rendered together.
const ALL_PARTS: &str = "text";

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
    pub kind: TemplateErrorKind,
    pub message: String,
}

/// What went wrong, for callers that branch (tests, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// Syntax, an unknown filter, a type error: minijinja's own error.
    Invalid,
    /// The render ran out of fuel ([`RENDER_FUEL`]).
    TooMuchWork,
    /// The part grew past [`MAX_PART_BYTES`].
    OutputTooLarge,
    /// The render did not finish within [`RENDER_TIMEOUT`].
    TimedOut,
    /// The rendered subject holds a line break.
    HeaderInjection,
}

/// The compiled templates of one campaign.
pub struct CampaignTemplates {
    env: Environment<'static>,
    has_html: bool,
    /// Every part is a plain substitution of at most [`MAX_INLINE_TEMPLATE_BYTES`] in all.
    inline: bool,
}

/// Largest template source (all parts together) rendered in place by [`render_shared`]:
/// bounds even a hostile plain template (tens of thousands of substitutions) to about a
/// millisecond.
pub const MAX_INLINE_TEMPLATE_BYTES: usize = 256 * 1024;

/// True when `source` has no statements (`{% %}`), no comments (`{# #}`) and every expression
/// is a bare variable name (`{{ name }}`, `{{- name -}}`): no loop, call, filter or operator,
/// so rendering it costs one look-up per substitution plus a copy of its text and values, and
/// nothing a recipient's variables hold can make it run longer. Conservative: anything else
/// (a filter, a test, a string) renders on the blocking pool.
pub fn is_plain_substitution(source: &str) -> bool {
    if source.contains("{%") || source.contains("{#") {
        return false;
    }
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return false;
        };
        let inner = after[..end]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let mut chars = inner.chars();
        let ident = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return false;
        }
        rest = &after[end + 2..];
    }
    true
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
    TemplateError {
        part,
        kind: TemplateErrorKind::Invalid,
        message,
    }
}

/// A writer that refuses to grow past `limit` bytes. minijinja writes whole strings, so what
/// it holds is always valid UTF-8.
struct CappedOutput {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for CappedOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        // Fuel is counted per render, so every part of every message gets the full amount.
        env.set_fuel(Some(RENDER_FUEL));
        env.add_template_owned(SUBJECT, spec.subject.clone())
            .map_err(|e| compile_error(SUBJECT, e))?;
        env.add_template_owned(TEXT, spec.text.clone())
            .map_err(|e| compile_error(TEXT, e))?;
        if let Some(html) = &spec.html {
            env.add_template_owned(HTML, html.clone())
                .map_err(|e| compile_error(HTML, e))?;
        }
        let parts = [Some(&spec.subject), Some(&spec.text), spec.html.as_ref()];
        let size: usize = parts.iter().flatten().map(|p| p.len()).sum();
        let inline = size <= MAX_INLINE_TEMPLATE_BYTES
            && parts.iter().flatten().all(|p| is_plain_substitution(p));
        Ok(Self {
            env,
            has_html: spec.html.is_some(),
            inline,
        })
    }

    /// True when [`render_shared`] renders these in place (see [`is_plain_substitution`]).
    pub fn renders_inline(&self) -> bool {
        self.inline
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
        let render = |part: &'static str| self.render_part(part, &ctx, MAX_PART_BYTES);
        let subject = render(SUBJECT)?;
        if subject.chars().any(|c| c == '\r' || c == '\n') {
            return Err(TemplateError {
                part: SUBJECT,
                kind: TemplateErrorKind::HeaderInjection,
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

impl CampaignTemplates {
    /// One part, within the fuel and `limit` bytes.
    fn render_part(
        &self,
        part: &'static str,
        ctx: &std::collections::BTreeMap<&str, &str>,
        limit: usize,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(part)
            .map_err(|e| compile_error(part, e))?;
        let mut out = CappedOutput {
            buf: Vec::new(),
            limit,
            exceeded: false,
        };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(String::from_utf8(out.buf)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
            Err(_) if out.exceeded => Err(TemplateError {
                part,
                kind: TemplateErrorKind::OutputTooLarge,
                message: format!("output too large: more than {limit} bytes"),
            }),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError {
                part,
                kind: TemplateErrorKind::TooMuchWork,
                message: format!(
                    "too much work: more than {RENDER_FUEL} template instructions (a loop too long?)"
                ),
            }),
            Err(e) => Err(compile_error(part, e)),
        }
    }
}

/// Runs `render` on the blocking pool and waits at most [`RENDER_TIMEOUT`] for it. Every
/// service renders through this: a render on a runtime thread would stop that thread's
/// heartbeats, acks and requests for as long as it runs. A render that times out keeps its
/// blocking thread until its fuel runs out; the caller has its answer already.
pub async fn render_blocking<T, F>(render: F) -> Result<T, TemplateError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, TemplateError> + Send + 'static,
{
    let timed_out = || TemplateError {
        part: ALL_PARTS,
        kind: TemplateErrorKind::TimedOut,
        message: format!(
            "too much work: rendering took longer than {}",
            humantime::format_duration(RENDER_TIMEOUT)
        ),
    };
    match tokio::time::timeout(RENDER_TIMEOUT, tokio::task::spawn_blocking(render)).await {
        Ok(Ok(result)) => result,
        // The render panicked (a minijinja bug): as permanent as any other template failure.
        Ok(Err(join)) => Err(TemplateError {
            part: ALL_PARTS,
            kind: TemplateErrorKind::Invalid,
            message: format!("rendering failed: {join}"),
        }),
        Err(_) => Err(timed_out()),
    }
}

/// Compiles `spec` and renders it for one recipient, off the runtime thread: what ingest's
/// submit and preview do once to refuse a campaign that cannot render.
pub async fn try_render(
    spec: CampaignSpec,
    email: String,
    vars: Vars,
) -> Result<Rendered, TemplateError> {
    render_blocking(move || CampaignTemplates::compile(&spec)?.render(&email, &vars)).await
}

/// As [`render_blocking`] for a campaign's compiled templates, shared between messages; a
/// plain-substitution campaign ([`CampaignTemplates::renders_inline`]) renders in place.
pub async fn render_shared(
    templates: Arc<Result<CampaignTemplates, TemplateError>>,
    email: String,
    vars: Vars,
    unsubscribe_url: Option<String>,
) -> Result<Rendered, TemplateError> {
    if let Ok(t) = templates.as_ref() {
        if t.inline {
            return t.render_with_unsubscribe(&email, &vars, unsubscribe_url.as_deref());
        }
    }
    render_blocking(move || {
        templates
            .as_ref()
            .as_ref()
            .map_err(Clone::clone)?
            .render_with_unsubscribe(&email, &vars, unsubscribe_url.as_deref())
    })
    .await
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
    fn only_bare_substitutions_render_in_place() {
        for plain in [
            "Hello {{ name }}, {{email}} {{- x -}}!",
            "no variables at all",
            "{{ unsubscribe_url }}",
            "",
        ] {
            assert!(is_plain_substitution(plain), "{plain}");
        }
        for logic in [
            "{% for i in range(10) %}x{% endfor %}",
            "{{ name|upper }}",
            "{{ 'x' * 100000000 }}",
            "{{ a.b }}",
            "{{ f() }}",
            "{# comment #}",
            "{{ name",
            "{{ }}",
        ] {
            assert!(!is_plain_substitution(logic), "{logic}");
        }
        let s = |text: &str| CampaignSpec {
            text: text.into(),
            ..spec("Hi {{ name }}", Some("<p>{{ name }}</p>"))
        };
        assert!(CampaignTemplates::compile(&s("Hello {{ name }}"))
            .unwrap()
            .renders_inline());
        assert!(!CampaignTemplates::compile(&s("{{ name|upper }}"))
            .unwrap()
            .renders_inline());
        let huge = "x".repeat(MAX_INLINE_TEMPLATE_BYTES);
        assert!(!CampaignTemplates::compile(&s(&huge))
            .unwrap()
            .renders_inline());
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

    /// The template: 10^10 iterations, each writing 100,000 bytes.
    const NESTED: &str = "{% for a in range(100000) %}{% for b in range(100000) %}{{ \"x\" * 100000 }}{% endfor %}{% endfor %}";

    #[test]
    fn a_template_that_writes_too_much_fails_quickly() {
        let mut s = spec("Hi", None);
        s.text = NESTED.into();
        let t = CampaignTemplates::compile(&s).unwrap();
        let started = std::time::Instant::now();
        let err = t.render("a@example.com", &Vars::new()).unwrap_err();
        assert_eq!(err.part, "text");
        assert_eq!(err.kind, TemplateErrorKind::OutputTooLarge);
        assert!(err.message.contains("output too large"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_template_that_loops_too_long_runs_out_of_fuel() {
        // Writes nothing, so only the fuel stops it.
        let html = "{% for a in range(100000) %}{% for b in range(100000) %}{% set c = a * b %}{% endfor %}{% endfor %}";
        let t = CampaignTemplates::compile(&spec("Hi", Some(html))).unwrap();
        let started = std::time::Instant::now();
        let err = t.render("a@example.com", &Vars::new()).unwrap_err();
        assert_eq!(err.part, "html");
        assert_eq!(err.kind, TemplateErrorKind::TooMuchWork);
        assert!(err.message.contains("too much work"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn limits_leave_ordinary_templates_alone() {
        // A long merge within the limits: 1,000 rows and just under the size limit.
        let mut s = spec("Hi", None);
        s.text =
            "{% for i in range(1000) %}row {{ i }} {{ name }}\n{% endfor %}{{ \"y\" * 2000000 }}"
                .into();
        let t = CampaignTemplates::compile(&s).unwrap();
        let vars: Vars = [("name".to_string(), "Ann".to_string())].into();
        let r = t.render("a@example.com", &vars).unwrap();
        assert!(r.text.starts_with("row 0 Ann\n"));
        assert!(r.text.len() > 2_000_000 && r.text.len() <= MAX_PART_BYTES);
        // One byte past the limit fails.
        s.text = format!("{{{{ \"y\" * {} }}}}", MAX_PART_BYTES + 1);
        let t = CampaignTemplates::compile(&s).unwrap();
        assert_eq!(
            t.render("a@example.com", &Vars::new()).unwrap_err().kind,
            TemplateErrorKind::OutputTooLarge
        );
    }

    #[tokio::test]
    async fn try_render_runs_off_the_runtime_thread() {
        let mut s = spec("Hi", None);
        s.text = NESTED.into();
        // A current-thread runtime: a render on it would block this very test.
        let err = try_render(s, "a@example.com".into(), Vars::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::OutputTooLarge);
        let ok = try_render(
            spec("Hi {{ name }}", None),
            "a@example.com".into(),
            Vars::new(),
        )
        .await
        .unwrap();
        assert_eq!(ok.subject, "Hi ");
    }
}

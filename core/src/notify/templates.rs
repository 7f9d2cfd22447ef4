//! Message templates: one file per (language, kind) under `core/templates/notify/<locale>/<kind>.txt`, with blocks
//! `subject`, `body` (plain text) and `link_label`, and one HTML layout that frames the same body paragraphs with
//! the tenant's name (every value escaped). The files are compiled into the binary, so a deployment cannot run with
//! a missing template; a test renders every (kind, locale) pair.

use minijinja::{context, AutoEscape, Environment};
use serde_json::Value;

use super::{Kind, Locale};

/// A message ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

macro_rules! templates {
    ($($locale:literal / $kind:literal),* $(,)?) => {
        &[$(
            (concat!($locale, "/", $kind, ".txt"),
             include_str!(concat!("../../templates/notify/", $locale, "/", $kind, ".txt"))),
        )*]
    };
}

const FILES: &[(&str, &str)] = templates!(
    "en" / "invitation",
    "de" / "invitation",
    "en" / "verify_email",
    "de" / "verify_email",
    "en" / "password_reset",
    "de" / "password_reset",
    "en" / "receipt",
    "de" / "receipt",
    "en" / "sos",
    "de" / "sos",
    "en" / "low_balance",
    "de" / "low_balance",
    "en" / "debt",
    "de" / "debt",
    "en" / "session_warning",
    "de" / "session_warning",
    "en" / "daily_summary",
    "de" / "daily_summary",
    "en" / "report",
    "de" / "report",
    "en" / "eject_unanswered",
    "de" / "eject_unanswered",
);

const LAYOUT: &str = include_str!("../../templates/notify/layout.html");

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // Plain text is never escaped; the HTML layout always is.
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in FILES {
        env.add_template(name, source)?;
    }
    env.add_template("layout.html", LAYOUT)?;
    Ok(env)
}

fn environment_once() -> Result<&'static Environment<'static>, String> {
    static ENV: std::sync::OnceLock<Result<Environment<'static>, String>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| environment().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// Whose message it is: the tenant's name, and its logo and accent colour for the HTML part.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub name: &'a str,
    pub branding: &'a crate::tenants::Branding,
}

/// Renders `kind` in `locale` for `sender` with the message's `data` (and its one-time `token`, and the `link`
/// built from it, when it carries one).
pub fn render(
    kind: Kind,
    locale: Locale,
    sender: Sender<'_>,
    data: &Value,
    token: Option<&str>,
    link: Option<&str>,
) -> Result<Rendered, String> {
    let env = environment_once()?;
    let name = format!("{}/{}.txt", locale.as_str(), kind.as_str());
    let template = env.get_template(&name).map_err(|e| format!("{e:#}"))?;
    let tenant = sender.name;
    let ctx = context! {
        tenant => tenant,
        token => token,
        link => link,
        locale => locale.as_str(),
        ..minijinja::Value::from_serialize(data)
    };
    let mut captured = template
        .render_captured(ctx)
        .map_err(|e| format!("{e:#}"))?;
    let mut block = |name: &str| {
        captured
            .with_state_mut(|state| state.render_block(name))
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{e:#}"))
    };
    let subject = block("subject")?.replace(['\r', '\n'], " ");
    let text = block("body")?;
    let link_label = block("link_label")?;
    let paragraphs: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|p| p.lines().collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .collect();
    let footer = match locale {
        Locale::En => "Sent by Switchyard on behalf of this operator.",
        Locale::De => "Gesendet von Switchyard im Auftrag dieses Betreibers.",
    };
    let html = env
        .get_template("layout.html")
        .and_then(|t| {
            t.render(context! {
                tenant => tenant,
                logo => sender.branding.logo_url.as_deref(),
                color => sender.branding.color.as_deref().unwrap_or(crate::tenants::DEFAULT_BRAND_COLOR),
                subject => &subject,
                locale => locale.as_str(),
                paragraphs => paragraphs,
                link => if link_label.is_empty() { None } else { link },
                link_label => link_label,
                footer => footer,
            })
        })
        .map_err(|e| format!("{e:#}"))?;
    Ok(Rendered {
        subject,
        text: format!("{text}\n"),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_renders_in_every_language_with_the_tenant_name_and_escaped_html() {
        for kind in Kind::ALL {
            for locale in [Locale::En, Locale::De] {
                let data = serde_json::json!({
                    "role": "staff", "days": 7, "name": "Dana", "venue": "Downtown", "station": "PC-01",
                    "total": "1.20 EUR", "lines": [{"description": "10 min", "amount": "1.20 EUR"}],
                    "severity": "high", "sos_id": "x", "balance": "1.00 EUR", "threshold": "5.00 EUR",
                    "debt": "2.00 EUR", "minutes": 5, "title": "Diagnostics", "report_id": "r1",
                    "cabinet": "Cabinet A", "slot": 3, "powerbank": "PB-7", "taken_at": "2026-12-05 21:00 CET",
                    "command_id": "c1",
                });
                let r = render(
                    kind,
                    locale,
                    Sender {
                        name: "Bob's <Bar> & Grill",
                        branding: &crate::tenants::Branding::default(),
                    },
                    &data,
                    Some("tok123"),
                    Some("https://example.test/x?token=tok123"),
                )
                .unwrap_or_else(|e| panic!("{kind:?}/{locale:?}: {e}"));
                assert!(!r.subject.is_empty(), "{kind:?}/{locale:?}");
                assert!(
                    r.html.contains("Bob&#x27;s &lt;Bar&gt; &amp; Grill"),
                    "{}",
                    r.html
                );
                assert!(!r.html.contains("<Bar>"));
                assert!(r.text.contains("Bob's <Bar> & Grill") || r.subject.contains("Bob's"));
                assert!(!r.html.contains("<img"), "no logo, no image");
                assert!(r.html.contains(crate::tenants::DEFAULT_BRAND_COLOR));
            }
        }
    }

    #[test]
    fn the_html_part_shows_the_tenants_logo_and_colour() {
        let branding = crate::tenants::Branding {
            logo_url: Some("https://cdn.example.com/logo.png?v=1&s=2".into()),
            color: Some("#aa3300".into()),
        };
        let r = render(
            Kind::Receipt,
            Locale::En,
            Sender {
                name: "Arcade",
                branding: &branding,
            },
            &serde_json::json!({"total": "1.20 EUR", "lines": []}),
            None,
            None,
        )
        .unwrap();
        assert!(
            r.html
                // Escaped for the attribute (`/` as `&#x2f;`), which the mail client reads back as the address.
                .contains(r#"<img src="https:&#x2f;&#x2f;cdn.example.com&#x2f;logo.png?v=1&amp;s=2" alt="Arcade""#),
            "{}",
            r.html
        );
        assert!(r.html.contains("#aa3300"), "{}", r.html);
        assert!(!r.text.contains("logo.png"), "the text part has no logo");
    }
}

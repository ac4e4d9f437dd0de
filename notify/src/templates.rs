//! The emails notify sends: each a subject, a plain-text body and an HTML body.

/// One rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// Percent-encode a query value.
pub fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Greeting, paragraphs, an optional button, in both forms.
fn layout(
    subject: &str,
    name: &str,
    paragraphs: &[String],
    link: Option<(&str, &str)>,
) -> Rendered {
    let greeting = if name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {name},")
    };
    let mut text = format!("{greeting}\n\n");
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>{}</p>",
        html_escape(&greeting)
    );
    for p in paragraphs {
        text.push_str(p);
        text.push_str("\n\n");
        html.push_str(&format!("<p>{}</p>", html_escape(p)));
    }
    if let Some((label, url)) = link {
        text.push_str(&format!("{label}: {url}\n\n"));
        html.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            html_escape(url),
            html_escape(label)
        ));
    }
    text.push_str("— MeetEase\n");
    html.push_str("<p>— MeetEase</p></body></html>");
    Rendered {
        subject: subject.to_owned(),
        text,
        html,
    }
}

pub fn welcome(name: &str, public_url: &str) -> Rendered {
    layout(
        "Welcome to MeetEase",
        name,
        &["Your account is ready. Start a meeting or schedule one whenever you like.".into()],
        Some(("Open MeetEase", public_url)),
    )
}

pub fn verify_email(name: &str, public_url: &str, token: &str) -> Rendered {
    let url = format!("{public_url}/verify-email?token={}", query_escape(token));
    layout(
        "Confirm your email address",
        name,
        &["Please confirm that this is your email address.".into()],
        Some(("Confirm email", &url)),
    )
}

pub fn password_reset(name: &str, public_url: &str, token: &str) -> Rendered {
    let url = format!("{public_url}/reset?token={}", query_escape(token));
    layout(
        "Reset your MeetEase password",
        name,
        &["Someone asked to reset your password. If it was not you, ignore this email.".into()],
        Some(("Choose a new password", &url)),
    )
}

pub fn password_changed(name: &str) -> Rendered {
    layout(
        "Your MeetEase password was changed",
        name,
        &["Your password was just changed and your other sessions were signed out. If this was not you, reset your password now.".into()],
        None,
    )
}

/// `when` is the start in the meeting's time zone, already formatted.
pub fn invitation(title: &str, when: &str, join_url: &str, updated: bool) -> Rendered {
    let subject = if updated {
        format!("Updated invitation: {title}")
    } else {
        format!("Invitation: {title}")
    };
    let what = if updated {
        format!("The meeting \"{title}\" has changed. It now starts {when}.")
    } else {
        format!("You are invited to \"{title}\", starting {when}.")
    };
    layout(
        &subject,
        "",
        &[
            what,
            "The attached calendar entry adds it to your calendar.".into(),
        ],
        Some(("Join the meeting", join_url)),
    )
}

pub fn cancellation(title: &str, when: &str) -> Rendered {
    layout(
        &format!("Cancelled: {title}"),
        "",
        &[format!(
            "The meeting \"{title}\" ({when}) has been cancelled."
        )],
        None,
    )
}

pub fn reminder(title: &str, when: &str, join_url: &str) -> Rendered {
    layout(
        &format!("Starting soon: {title}"),
        "",
        &[format!("\"{title}\" starts {when}.")],
        Some(("Join the meeting", join_url)),
    )
}

pub fn summary(title: &str, minutes: i64, participants: i64, public_url: &str) -> Rendered {
    let people = if participants == 1 {
        "1 person".to_owned()
    } else {
        format!("{participants} people")
    };
    layout(
        &format!("Summary: {title}"),
        "",
        &[format!(
            "Your meeting \"{title}\" has ended. It lasted {minutes} min and {people} joined."
        )],
        Some(("Open MeetEase", public_url)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_token_and_html_is_escaped() {
        let r = verify_email("<Ann>", "http://x", "a+b/c");
        assert!(r.text.contains("http://x/verify-email?token=a%2Bb%2Fc"));
        assert!(r.html.contains("&lt;Ann&gt;"));
        assert!(
            password_reset("", "http://x", "t")
                .text
                .contains("http://x/reset?token=t")
        );
    }
}

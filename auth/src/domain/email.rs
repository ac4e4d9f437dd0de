//! `Email`: the only way an address enters the domain.

use std::fmt;

/// A normalised, plausibly deliverable email address.
///
/// Normalisation: surrounding whitespace trimmed, the whole address lower-cased (so
/// `Ann@Example.COM` and `ann@example.com` are one account). Accepted: ASCII only
/// (internationalised domains arrive as punycode), at most 254 characters, a local
/// part of 1–64 characters from the RFC 5322 "atext" set with single inner dots, and a
/// domain of at least two dot-separated labels of letters, digits and inner hyphens.
/// Quoted local parts, comments and IP-literal domains are refused: they are legal but
/// only ever seen in attacks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why an address was refused (the message is safe to show).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EmailError(&'static str);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(EmailError("is empty"));
        }
        if text.len() > 254 {
            return Err(EmailError("is longer than 254 characters"));
        }
        if !text.is_ascii() {
            return Err(EmailError("must be ASCII (use punycode for the domain)"));
        }
        let text = text.to_ascii_lowercase();
        let (local, domain) = text
            .rsplit_once('@')
            .ok_or(EmailError("must contain an @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError("the part before @ must be 1-64 characters"));
        }
        const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || ATEXT.contains(c))
        {
            return Err(EmailError("the part before @ has characters not allowed"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError("the part before @ has a misplaced dot"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(EmailError("the domain must have a dot"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(EmailError("the domain is not valid"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EmailError("the domain is not valid"));
        }
        Ok(Email(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        let email = Email::parse("  Ann.Lee+meet@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ann.lee+meet@example.com");
    }

    #[test]
    fn plausible_addresses_are_accepted() {
        for ok in [
            "a@b.co",
            "first.last@sub.example.org",
            "x_y-z@xn--bcher-kva.example",
            "o'brien@example.ie",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn implausible_addresses_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(260));
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@example.com",
            "a b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example..com",
            "a@127.0.0.1",
            "\"a\"@example.com",
            "a@[127.0.0.1]",
            "ünï@example.com",
            "a@exa\nmple.com",
            "'; DROP TABLE users; --@example.com",
            &long_local,
            &long_total,
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_text() {
        // A cheap stand-in for a property test: every short string over a hostile alphabet.
        let alphabet = ['a', '@', '.', '-', ' ', 'é', '\0', '"'];
        let mut input = String::new();
        for n in 0..4096u32 {
            input.clear();
            let mut k = n;
            for _ in 0..4 {
                input.push(alphabet[(k % 8) as usize]);
                k /= 8;
            }
            let _ = Email::parse(&input);
        }
    }
}

//! Join codes: short, unguessable, easy to read aloud and type.
//!
//! Ten characters from a 31-letter alphabet with no look-alikes (no `0 o 1 l i`),
//! shown as `abc-defg-hjk`: about 49.5 bits, drawn from the OS's secure generator.
//! Input is forgiving: case and hyphens are ignored.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const LEN: usize = 10;

/// A new random join code, `xxx-xxxx-xxx`.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let raw: String = (0..LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format(&raw)
}

fn format(raw: &str) -> String {
    format!("{}-{}-{}", &raw[..3], &raw[3..7], &raw[7..])
}

/// The canonical form of something a person typed, or `None` when it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let raw: String = input
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let ok = raw.len() == LEN && raw.bytes().all(|b| ALPHABET.contains(&b));
    ok.then(|| format(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_shape() {
        for _ in 0..1000 {
            let code = generate();
            assert_eq!(code.len(), 12);
            assert_eq!(&code[3..4], "-");
            assert_eq!(&code[8..9], "-");
            assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
        }
    }

    #[test]
    fn typed_codes_are_normalized_and_look_alikes_refused() {
        assert_eq!(normalize("ABCDEFGHJK").as_deref(), Some("abc-defg-hjk"));
        assert_eq!(normalize("abc-defg-hjk").as_deref(), Some("abc-defg-hjk"));
        assert_eq!(normalize("abc-defg-hj0"), None);
        assert_eq!(normalize("abc-defg-hjkk"), None);
        assert_eq!(normalize("ab©-defg-hjk"), None);
        assert_eq!(normalize(""), None);
    }
}

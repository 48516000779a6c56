//! Glob matching for `GET /orgs?filterField=name&filter=...`.
//!
//! The upstream only says the filter "supports globbing" (example `my*org`). The sandbox
//! matches the whole name, case-insensitively, with `*` for any run of characters (including
//! none) and `?` for exactly one character; every other character, including `[`, `]` and `\`,
//! stands for itself.

/// Whether `text` matches the glob `pattern` (whole string, case-insensitive).
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = fold(pattern);
    let text = fold(text);
    // Classic linear-time wildcard matching: remember the last `*` and how much of the text it
    // has swallowed, and widen that on a mismatch instead of recursing.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Lower-cases for comparison; `char::to_lowercase` may yield several characters.
fn fold(text: &str) -> Vec<char> {
    text.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literal_and_case() {
        assert!(glob_match("Acme", "acme"));
        assert!(glob_match("ACME", "Acme"));
        assert!(!glob_match("acme", "acme labs"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn star() {
        assert!(glob_match("my*org", "My Sandbox Org"));
        assert!(glob_match("my*org", "myorg"));
        assert!(!glob_match("my*org", "my organisation"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("acme*", "Acme Industrial IoT"));
        assert!(glob_match("*iot", "Acme Industrial IoT"));
        assert!(glob_match("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!glob_match("*a*b*c*", "xxcxxbxxaxx"));
        assert!(glob_match("**x", "x"));
    }

    #[test]
    fn question_mark() {
        assert!(glob_match("acme?labs", "acme-labs"));
        assert!(glob_match("acme?labs", "Acme Labs"));
        assert!(!glob_match("acme?labs", "acmelabs"));
        assert!(glob_match("???", "abc"));
        assert!(!glob_match("???", "ab"));
        assert!(glob_match("?*", "é"));
    }

    #[test]
    fn brackets_are_literal() {
        assert!(glob_match("[test]*", "[TEST] org"));
        assert!(!glob_match("[test]*", "t org"));
    }
}

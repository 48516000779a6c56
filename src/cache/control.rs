//! The caller's `cache-control` metadata: whether to read and write the cache at all
//! (`no-cache`, `no-store`), and how old an answer it accepts (`max-age=N`,
//! `stale-if-error=N`, `only-if-cached`), as RFC 9111 and RFC 5861 spell them.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// How the caller asked the cache to behave (`cache-control` metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Use the cache.
    Default,
    /// `no-cache`: do not read the cache; fetch, and store the fresh answer.
    NoCache,
    /// `no-store`: neither read nor write the cache.
    NoStore,
}

/// Everything the caller's `cache-control` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    /// Whether the cache is read and written.
    pub directive: Directive,
    /// `max-age=N`: serve nothing fetched more than N seconds ago (not even on an error).
    pub max_age: Option<Duration>,
    /// `stale-if-error=N`: this call's stale-if-error window instead of the server's (bounded
    /// by how long the server keeps entries).
    pub stale_if_error: Option<Duration>,
    /// `only-if-cached`: answer from the cache or fail with `NOT_CACHED`; never call upstream.
    pub only_if_cached: bool,
}

impl Default for CacheControl {
    fn default() -> CacheControl {
        CacheControl {
            directive: Directive::Default,
            max_age: None,
            stale_if_error: None,
            only_if_cached: false,
        }
    }
}

impl Directive {
    /// Reads the `cache-control` metadata's `no-cache` / `no-store`.
    pub fn from_metadata(metadata: &MetadataMap) -> Directive {
        CacheControl::from_metadata(metadata).directive
    }
}

impl CacheControl {
    /// Reads every `cache-control` value; tokens it does not know are ignored, as HTTP caches
    /// ignore them, and of a repeated `max-age` or `stale-if-error` the smallest wins.
    pub fn from_metadata(metadata: &MetadataMap) -> CacheControl {
        let mut control = CacheControl::default();
        let tokens = metadata
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim);
        for token in tokens {
            let (name, argument) = match token.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (token, None),
            };
            let seconds = || {
                argument
                    .and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            let smaller = |now: Option<Duration>, new: Option<Duration>| match (now, new) {
                (Some(now), Some(new)) => Some(now.min(new)),
                (now, new) => now.or(new),
            };
            if name.eq_ignore_ascii_case("no-store") {
                control.directive = Directive::NoStore;
            } else if name.eq_ignore_ascii_case("no-cache")
                && control.directive != Directive::NoStore
            {
                control.directive = Directive::NoCache;
            } else if name.eq_ignore_ascii_case("max-age") {
                control.max_age = smaller(control.max_age, seconds());
            } else if name.eq_ignore_ascii_case("stale-if-error") {
                control.stale_if_error = smaller(control.stale_if_error, seconds());
            } else if name.eq_ignore_ascii_case("only-if-cached") {
                control.only_if_cached = true;
            }
        }
        control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(values: &[&str]) -> CacheControl {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("cache-control", value.parse().unwrap());
        }
        CacheControl::from_metadata(&metadata)
    }

    #[test]
    fn directives_and_limits() {
        assert_eq!(control(&[]), CacheControl::default());
        let parsed = control(&["max-age=30, stale-if-error=\"120\"", "ONLY-IF-CACHED"]);
        assert_eq!(parsed.directive, Directive::Default);
        assert_eq!(parsed.max_age, Some(Duration::from_secs(30)));
        assert_eq!(parsed.stale_if_error, Some(Duration::from_secs(120)));
        assert!(parsed.only_if_cached);
        assert_eq!(
            control(&["no-cache", "no-store"]).directive,
            Directive::NoStore
        );
        assert_eq!(
            control(&["no-store, no-cache"]).directive,
            Directive::NoStore
        );
        assert_eq!(
            control(&["max-age=0, no-cache"]).directive,
            Directive::NoCache
        );
    }

    #[test]
    fn the_smallest_of_repeated_limits_wins_and_bad_numbers_are_ignored() {
        let parsed = control(&["max-age=60", "max-age=5, stale-if-error=x"]);
        assert_eq!(parsed.max_age, Some(Duration::from_secs(5)));
        assert_eq!(parsed.stale_if_error, None);
        assert_eq!(control(&["max-age=-1"]).max_age, None);
    }
}

//! The rate limit's settings (`--rate-limit-*`) and the `N/s` / `N/m` rates they take.

use std::{fmt, num::NonZeroU32, str::FromStr, time::Duration};

/// The rate limit's flags; the gateway's `Settings` flattens them.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitSettings {
    /// Calls that reach the upstream per token, as `N/s` or `N/m`: over it a call is refused at
    /// once with RESOURCE_EXHAUSTED (`RATE_LIMITED`) and a RetryInfo. One limit across every
    /// replica with `--cache-redis-url`, per replica without. Off by default.
    #[arg(long, value_parser = Rate::from_str)]
    pub rate_limit_per_token: Option<Rate>,
    /// Calls a token may make at once, above its steady rate (with `--rate-limit-per-token`).
    /// Default: one second's worth of the rate (at least 1).
    #[arg(long, requires = "rate_limit_per_token", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,
    /// Whether cache hits count against `--rate-limit-per-token` too (they cost the upstream
    /// nothing).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rate_limit_cache_hits: bool,
}

/// A steady rate: `count` calls per `per` (a second or a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls per period.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

/// A rate that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a rate: write N/s or N/m with N a whole number from 1 (e.g. 10/s, 600/m)")]
pub struct RateError(String);

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let error = || RateError(text.to_string());
        let (count, unit) = text.trim().split_once('/').ok_or_else(error)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(error()),
        };
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| error())?;
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per == Duration::from_secs(1) {
            "s"
        } else {
            "m"
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// What one token may do: a call every `interval` on average, `burst` at once at most
/// (GCRA: the emission interval and the burst tolerance of `interval × burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The emission interval: the period divided by the count.
    pub interval: Duration,
    /// The most calls admitted at once.
    pub burst: NonZeroU32,
}

impl Limit {
    /// The limit `settings` describe, `None` when `--rate-limit-per-token` is not set.
    pub fn from_settings(settings: &RateLimitSettings) -> Option<Limit> {
        let rate = settings.rate_limit_per_token?;
        let burst = settings
            .rate_limit_burst
            .and_then(NonZeroU32::new)
            .unwrap_or_else(|| one_seconds_worth(rate));
        Some(Limit {
            interval: rate.per / rate.count.get(),
            burst,
        })
    }

    /// The burst tolerance: how far ahead of now a token's schedule may run.
    pub fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst.get())
    }
}

/// The calls `rate` allows in one second, rounded up (at least 1).
fn one_seconds_worth(rate: Rate) -> NonZeroU32 {
    let per_second = u64::from(rate.count.get()).div_ceil(rate.per.as_secs().max(1));
    NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: &str, burst: Option<u32>) -> RateLimitSettings {
        RateLimitSettings {
            rate_limit_per_token: Some(rate.parse().unwrap()),
            rate_limit_burst: burst,
            rate_limit_cache_hits: false,
        }
    }

    #[test]
    fn rates_parse_per_second_and_per_minute() {
        let rate: Rate = "10/s".parse().unwrap();
        assert_eq!((rate.count.get(), rate.per), (10, Duration::from_secs(1)));
        let rate: Rate = " 600 / m ".parse().unwrap();
        assert_eq!((rate.count.get(), rate.per), (600, Duration::from_secs(60)));
        assert_eq!(rate.to_string(), "600/m");
        for bad in ["", "10", "0/s", "-1/s", "1.5/s", "10/h", "ten/s", "10/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_and_their_variables() {
        use crate::config::{Cli, test_env};
        let env = test_env(&[
            ("WNOLOGY_RATE_LIMIT_PER_TOKEN", "10/s"),
            ("WNOLOGY_RATE_LIMIT_CACHE_HITS", "true"),
        ]);
        let settings = Cli::load(["gw"], &env).unwrap().settings.rate_limit;
        assert_eq!(settings.rate_limit_per_token, Some("10/s".parse().unwrap()));
        assert!(settings.rate_limit_cache_hits);
        let off = Cli::load(["gw"], &test_env(&[]))
            .unwrap()
            .settings
            .rate_limit;
        assert_eq!(off.rate_limit_per_token, None);
        assert!(!off.rate_limit_cache_hits);
        let args = [
            "gw",
            "--rate-limit-per-token",
            "1/m",
            "--rate-limit-cache-hits",
        ];
        let bare = Cli::load(args, &test_env(&[])).unwrap().settings.rate_limit;
        assert!(bare.rate_limit_cache_hits, "the bare flag means true");
        for refused in [
            &["gw", "--rate-limit-burst", "5"][..],
            &[
                "gw",
                "--rate-limit-per-token",
                "10/s",
                "--rate-limit-burst",
                "0",
            ],
            &["gw", "--rate-limit-per-token", "10/h"],
        ] {
            assert!(
                Cli::load(refused.iter().copied(), &test_env(&[])).is_err(),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn the_burst_defaults_to_one_seconds_worth() {
        let limit = Limit::from_settings(&settings("10/s", None)).unwrap();
        assert_eq!(limit.interval, Duration::from_millis(100));
        assert_eq!(limit.burst.get(), 10);
        assert_eq!(limit.tolerance(), Duration::from_secs(1));
        let limit = Limit::from_settings(&settings("6/m", None)).unwrap();
        assert_eq!(limit.interval, Duration::from_secs(10));
        assert_eq!(
            limit.burst.get(),
            1,
            "less than one a second rounds up to 1"
        );
        let limit = Limit::from_settings(&settings("120/m", Some(5))).unwrap();
        assert_eq!(
            (limit.interval, limit.burst.get()),
            (Duration::from_millis(500), 5)
        );
        assert_eq!(
            Limit::from_settings(&RateLimitSettings {
                rate_limit_per_token: None,
                rate_limit_burst: None,
                rate_limit_cache_hits: true,
            }),
            None
        );
    }
}

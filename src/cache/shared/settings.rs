//! The shared tier's settings (`--cache-redis-*`, `--cache-secret-file`) and their checks at
//! start-up: the URL is parsed, the secret file is read once and must hold at least
//! [`MIN_SECRET_BYTES`] bytes. Neither the URL's password nor the secret is ever printed.

use std::{fmt, path::PathBuf, time::Duration};

use url::Url;
use zeroize::Zeroizing;

use crate::config::parse_duration;

/// The fewest bytes a cache secret may have.
pub const MIN_SECRET_BYTES: usize = 32;

/// The shared cache tier's flags; the gateway's `Settings` flattens them.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedTierSettings {
    /// The shared cache tier: `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS);
    /// unset, each replica has its own cache only.
    #[arg(long, value_parser = RedisUrl::parse)]
    pub cache_redis_url: Option<RedisUrl>,
    /// The Redis URL names one node of a Redis Cluster.
    #[arg(long)]
    pub cache_redis_cluster: bool,
    /// File holding the secret every replica shares (at least 32 random bytes); required with
    /// the Redis URL.
    #[arg(long)]
    pub cache_secret_file: Option<PathBuf>,
    /// The most one shared-tier operation may add to an RPC.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub cache_redis_timeout: Duration,
}

/// Why the shared tier's settings are refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A URL without the secret.
    #[error(
        "--cache-redis-url needs --cache-secret-file (WNOLOGY_CACHE_SECRET_FILE): the secret every replica shares"
    )]
    MissingSecret,
    /// The secret file cannot be read.
    #[error("cannot read the cache secret file {path}: {source}")]
    UnreadableSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is too short.
    #[error(
        "the cache secret file {path} holds {len} bytes; at least {MIN_SECRET_BYTES} random bytes are needed"
    )]
    ShortSecret {
        /// The file.
        path: PathBuf,
        /// Its length after trimming a trailing newline.
        len: usize,
    },
    /// A zero timeout would skip the tier always.
    #[error("--cache-redis-timeout must be more than zero")]
    ZeroTimeout,
    /// A database number in a Cluster URL (a cluster has only database 0).
    #[error(
        "--cache-redis-cluster: a Redis Cluster has no database other than 0 (remove /{0} from the URL)"
    )]
    ClusterDatabase(u8),
}

/// A Redis URL, checked; its `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: Url,
    database: Option<u8>,
}

impl RedisUrl {
    /// Parses `redis://[user:password@]host[:port][/db]` or `rediss://…`.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys") {
            return Err(format!(
                "scheme `{}`: expected redis:// or rediss://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the URL takes no query or fragment".into());
        }
        let path = url.path().trim_matches('/');
        let database = if path.is_empty() {
            None
        } else {
            Some(
                path.parse::<u8>()
                    .map_err(|_| format!("database `{path}` is not a number from 0 to 255"))?,
            )
        };
        Ok(RedisUrl { url, database })
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        matches!(self.url.scheme(), "rediss" | "valkeys")
    }

    /// The database number given in the path, if any.
    pub fn database(&self) -> Option<u8> {
        self.database
    }

    /// The full URL, password included: for the client only, never for a log.
    pub(crate) fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The shared secret: zeroed on drop, printed as nothing.
#[derive(Clone)]
pub struct CacheSecret(Zeroizing<Vec<u8>>);

impl CacheSecret {
    /// A secret from bytes, if there are enough of them.
    pub fn new(bytes: Vec<u8>) -> Option<CacheSecret> {
        let bytes = Zeroizing::new(bytes);
        (bytes.len() >= MIN_SECRET_BYTES).then_some(CacheSecret(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheSecret(..)")
    }
}

/// What the shared tier runs with, once the settings are checked.
#[derive(Debug, Clone)]
pub struct SharedTierConfig {
    /// Where Redis is.
    pub url: RedisUrl,
    /// Whether `url` names a Cluster node.
    pub cluster: bool,
    /// The shared secret.
    pub secret: CacheSecret,
    /// The bound on one operation.
    pub timeout: Duration,
}

impl SharedTierSettings {
    /// Checks the settings and reads the secret file: `None` when no Redis URL is set (one
    /// tier, as before).
    pub fn resolve(&self) -> Result<Option<SharedTierConfig>, SettingsError> {
        let Some(url) = &self.cache_redis_url else {
            return Ok(None);
        };
        let path = self
            .cache_secret_file
            .as_ref()
            .ok_or(SettingsError::MissingSecret)?;
        if self.cache_redis_timeout.is_zero() {
            return Err(SettingsError::ZeroTimeout);
        }
        if let (true, Some(db @ 1..)) = (self.cache_redis_cluster, url.database()) {
            return Err(SettingsError::ClusterDatabase(db));
        }
        let mut bytes = std::fs::read(path).map_err(|source| SettingsError::UnreadableSecret {
            path: path.clone(),
            source,
        })?;
        // A secret written with `echo` ends with a newline that is not part of it.
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        let len = bytes.len();
        let secret = CacheSecret::new(bytes).ok_or_else(|| SettingsError::ShortSecret {
            path: path.clone(),
            len,
        })?;
        Ok(Some(SharedTierConfig {
            url: url.clone(),
            cluster: self.cache_redis_cluster,
            secret,
            timeout: self.cache_redis_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shared: SharedTierSettings,
    }

    fn settings(args: &[&str]) -> SharedTierSettings {
        Cli::try_parse_from(std::iter::once("gw").chain(args.iter().copied()))
            .expect("parses")
            .shared
    }

    #[test]
    fn urls_are_parsed_and_passwords_hidden() {
        let url = RedisUrl::parse("redis://user:hunter2@cache.local:6380/3").unwrap();
        assert_eq!(url.database(), Some(3));
        assert!(!url.tls());
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        assert!(url.expose().contains("hunter2"));
        assert!(RedisUrl::parse("rediss://cache:6379").unwrap().tls());
        for bad in [
            "http://x",
            "redis://",
            "redis://h/db",
            "redis://h/300",
            "nonsense",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_unset_url() {
        let s = settings(&[]);
        assert_eq!(s.cache_redis_timeout, Duration::from_millis(50));
        assert!(!s.cache_redis_cluster);
        assert!(s.resolve().unwrap().is_none());
    }

    #[test]
    fn the_secret_is_required_read_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("wg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, b"0123456789\n").unwrap();
        let good = dir.join("good");
        std::fs::write(&good, [7u8; 40]).unwrap();
        let url = ["--cache-redis-url", "redis://127.0.0.1:6379"];
        let with = |file: &std::path::Path| {
            let mut args = url.to_vec();
            args.extend(["--cache-secret-file", file.to_str().unwrap()]);
            settings(&args).resolve()
        };
        assert!(matches!(
            settings(&url).resolve(),
            Err(SettingsError::MissingSecret)
        ));
        assert!(matches!(
            with(&short),
            Err(SettingsError::ShortSecret { len: 10, .. })
        ));
        assert!(matches!(
            with(&dir.join("absent")),
            Err(SettingsError::UnreadableSecret { .. })
        ));
        let config = with(&good).unwrap().unwrap();
        assert_eq!(config.secret.bytes(), &[7u8; 40]);
        assert_eq!(format!("{:?}", config.secret), "CacheSecret(..)");
        let message = with(&short).unwrap_err().to_string();
        assert!(message.contains("at least 32"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

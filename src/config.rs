//! Settings: every one is a `--kebab-case` flag with a matching `WNOLOGY_UPPER_SNAKE`
//! environment variable; a flag given on the command line wins over the variable.
//!
//! The environment is read through [`EnvSource`], so tests hand in a map instead of mutating
//! the process environment.

use std::{collections::HashMap, ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// The prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "WNOLOGY_";

/// Where environment variables come from.
pub trait EnvSource {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "wnology-gateway", version, about, args_override_self = true)]
pub struct Cli {
    /// The gateway's settings.
    #[command(flatten)]
    pub settings: Settings,
    /// Run something other than the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to run instead of the gateway.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run only the sandbox upstream (the REST API simulator), for curl and benchmarks.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Print the RPC table (Markdown) that README.md carries.
    Routes,
    /// Print the settings table (Markdown) that README.md carries.
    Settings,
}

/// Settings of the standalone sandbox (the sandbox crate's: `wnology-sandbox` takes the same).
#[cfg(feature = "sandbox")]
pub use wnology_sandbox::cli::SandboxArgs;

/// The gateway's settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the gRPC server listens on.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Address of the admin listener (Prometheus `/metrics`, `/healthz`).
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Log format: `auto` (JSON unless stdout is a terminal), `json` or `text`.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: crate::telemetry::LogFormat,
    /// The access log: one line per RPC (target `wnology_gateway::access`), written off the
    /// request path; lines stdout cannot take in time are dropped and counted.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// Base URL of the upstream REST API (`https://api.losant.com` is the same API).
    #[arg(long, default_value = "https://api.app.wnology.io")]
    pub upstream_url: String,
    /// `Accept-Version` header sent upstream.
    #[arg(long, default_value = "^1.30.0")]
    pub accept_version: String,
    /// Time limit of one upstream call when the caller sets no deadline.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Time limit for opening a connection to the upstream.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Largest upstream response body accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_upstream_response_bytes: usize,
    /// Bound on the read cache's size in bytes (keys, encoded answers and per-entry overhead).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Time to live of cached usage reads (device, payload and notebook-minute counts); 0 disables.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub cache_usage_ttl: Duration,
    /// Time to live of cached entities and lists (me, organizations, invitations); 0 disables.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub cache_entity_ttl: Duration,
    /// How long past their TTL cached answers may still be served (`--cache-*-stale-*`).
    #[command(flatten)]
    pub cache_stale: crate::cache::stale::StaleSettings,
    /// The shared cache tier on Redis (`--cache-redis-*`, `--cache-secret-file`).
    #[command(flatten)]
    pub shared_cache: crate::cache::shared::SharedTierSettings,
    /// Tests only: writes do not reach the shared tier or the other replicas (so a test can
    /// show that it fails without cross-replica invalidation). Never set it in a deployment.
    #[arg(long, hide = true)]
    pub cache_test_no_shared_invalidation: bool,
    /// The per-token rate limit (`--rate-limit-*`).
    #[command(flatten)]
    pub rate_limit: crate::ratelimit::RateLimitSettings,
    /// Retries of a failed read (GET) on connection errors, 502/503/504 and 429, with
    /// exponential backoff and jitter, inside the caller's deadline; writes are never retried.
    #[arg(long, default_value_t = 2)]
    pub upstream_retries: u32,
    /// The upstream's circuit breaker (`--upstream-breaker-*`).
    #[command(flatten)]
    pub upstream_breaker: crate::upstream::breaker::BreakerSettings,
    /// Most RPCs served at once; beyond it calls are refused at once with UNAVAILABLE (health
    /// and reflection are exempt). 0 means no limit.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrency: usize,
    /// Most upstream HTTP requests in flight at once, whatever callers do (resets included);
    /// an attempt waits for a free one within its deadline. Default: `--max-concurrency`; 0
    /// means no limit.
    #[arg(long)]
    pub max_upstream_in_flight: Option<usize>,
    /// Most concurrent calls on one HTTP/2 connection (advertised in SETTINGS), so that no
    /// single connection can take every `--max-concurrency` slot.
    #[arg(long, default_value_t = 200)]
    pub max_concurrent_streams: u32,
    /// Time limit for receiving a whole request message; a call past it is answered
    /// DEADLINE_EXCEEDED and its stream reset.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_read_timeout: Duration,
    /// Largest request message accepted, in bytes; a larger one is RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest request header list accepted (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`), in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: u32,
    /// Ask clients to reconnect (HTTP/2 GOAWAY; calls in flight finish) once a connection is this
    /// old, so that long-lived connections rebalance behind L4 load balancers; 0 disables.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Interval of HTTP/2 keepalive pings on each client connection; 0 disables.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
    /// A connection whose keepalive ping is not acknowledged within this time is closed.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Close a connection (HTTP/2 GOAWAY) that has had no call for this long; 0 disables.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_connection_idle: Duration,
    /// RPCs refused locally with PERMISSION_DENIED, comma-separated (`OrgService/Delete,MeService/Delete`).
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set)]
    pub deny_rpcs: Vec<String>,
    /// PEM certificate chain for TLS on the gRPC listener (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC listener (with `--tls-cert`).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// After SIGTERM/SIGINT: how long health reports NOT_SERVING while calls are still served,
    /// so that load balancers and endpoints stop sending new calls.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// After the drain delay: how long calls in flight may take to finish before the gateway exits.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Serve gRPC-Web (`application/grpc-web`, `+proto`, `-text`) for browsers on the gRPC port,
    /// over HTTP/1.1 and HTTP/2; `false` serves gRPC over HTTP/2 only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub grpc_web: bool,
    /// Origins whose pages may call through gRPC-Web (CORS), comma-separated
    /// (`https://dash.example.com`), or `*` for any (never with credentials: the token travels in
    /// `authorization`); a call from another `Origin` is refused. None by default.
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set, value_parser = crate::web::parse_origin)]
    pub cors_allowed_origins: Vec<String>,
    /// Run the embedded sandbox upstream on a loopback port and use it instead of `--upstream-url`.
    #[cfg(feature = "sandbox")]
    #[arg(long)]
    pub sandbox: bool,
    /// JSON file that replaces the sandbox's built-in seed data (with `--sandbox`).
    #[cfg(feature = "sandbox")]
    #[arg(long)]
    pub sandbox_seed: Option<PathBuf>,
    /// How long a sandbox invitation stays valid (with `--sandbox`; e.g. `7d`, `90s`).
    #[cfg(feature = "sandbox")]
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub sandbox_invite_ttl: Duration,
    /// Sandbox faults on demand (with `--sandbox`): `off`, `503` or `hang` for a share of
    /// calls (`503:0.5`); changed at run time with `PUT /_sandbox/faults` on the sandbox's port.
    #[cfg(feature = "sandbox")]
    #[arg(long, default_value = "off")]
    pub sandbox_faults: wnology_sandbox::faults::Faults,
}

impl Settings {
    /// The settings a loopback test starts from: every default, listening on an ephemeral
    /// loopback port, calling `upstream_url`, with no drain delay.
    pub fn for_upstream(upstream_url: impl Into<String>) -> Settings {
        let mut settings = Cli::parse_from(["wnology-gateway"]).settings;
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.upstream_url = upstream_url.into();
        settings.drain_delay = Duration::ZERO;
        settings
    }
}

impl Settings {
    /// `--max-upstream-in-flight`, which defaults to `--max-concurrency` (0: no limit).
    pub fn upstream_in_flight_bound(&self) -> usize {
        self.max_upstream_in_flight.unwrap_or(self.max_concurrency)
    }
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(#[from] clap::Error);

impl ConfigError {
    /// Prints the message (or help/version) and exits as clap does.
    pub fn exit(&self) -> ! {
        self.0.exit()
    }
}

impl Cli {
    /// Reads the command line, each flag not given there taking its environment variable's
    /// value.
    ///
    /// Not clap's own `env` support: it reads the process environment when the command is
    /// built, which tests could only change with `std::env::set_var` (unsafe, and racy across
    /// tests). Here a variable read through [`EnvSource`] becomes the flag's default, so clap's
    /// own precedence applies (the command line replaces it, lists included), the command line
    /// is never rewritten, and the value is checked by the flag's own parser; an error names
    /// the variable. A switch's variable must be a boolean word.
    pub fn load<I, T>(args: I, env: &dyn EnvSource) -> Result<Cli, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let variables = Variables::read(env)?;
        let matches = variables
            .command()
            .try_get_matches_from(args)
            .map_err(|error| variables.name_in(error))?;
        Ok(Cli::from_arg_matches(&matches)?)
    }
}

/// The gateway's variables that are set: per flag, the variable and the flag's values.
struct Variables(Vec<Variable>);

struct Variable {
    long: String,
    name: String,
    raw: String,
    values: Vec<String>,
}

impl Variables {
    fn read(env: &dyn EnvSource) -> Result<Variables, ConfigError> {
        let mut set = Vec::new();
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let name = env_var_name(long);
            let Some(raw) = env.var(&name) else { continue };
            let values = if !arg.get_action().takes_values() {
                let on = switch_value(&raw).ok_or_else(|| not_a_switch(&name, &raw))?;
                vec![on.to_string()]
            } else if let Some(delimiter) = arg.get_value_delimiter() {
                // clap splits a variable's list at the flag's delimiter, not a default's.
                raw.split(delimiter).map(str::to_owned).collect()
            } else {
                vec![raw.clone()]
            };
            let long = long.to_owned();
            set.push(Variable {
                long,
                name,
                raw,
                values,
            });
        }
        Ok(Variables(set))
    }

    /// The command, each flag's variable (when set) as its default.
    fn command(&self) -> clap::Command {
        command_with_env_help().mut_args(|arg| {
            let variable = self.0.iter().find(|v| arg.get_long() == Some(&v.long));
            match variable {
                Some(variable) => arg.default_values(variable.values.clone()),
                None => arg,
            }
        })
    }

    /// `error`, naming the variable when the value it refuses came from one.
    fn name_in(&self, error: clap::Error) -> ConfigError {
        use clap::error::{ContextKind, ContextValue};
        let text = |kind| match error.get(kind) {
            Some(ContextValue::String(text)) => Some(text.as_str()),
            _ => None,
        };
        let (Some(arg), Some(value)) = (
            text(ContextKind::InvalidArg),
            text(ContextKind::InvalidValue),
        ) else {
            return ConfigError(error);
        };
        let from = self.0.iter().find(|v| {
            arg.split([' ', '=']).next() == Some(&format!("--{}", v.long))
                && v.values.iter().any(|x| x == value)
        });
        let Some(variable) = from else {
            return ConfigError(error);
        };
        // The parser's own reason (a custom parser's message), else clap's kind of error.
        let why = std::error::Error::source(&error).map_or_else(
            || error.kind().as_str().unwrap_or("invalid value").to_owned(),
            ToString::to_string,
        );
        ConfigError(command_with_env_help().error(
            clap::error::ErrorKind::InvalidValue,
            format!("{}={:?} (for {arg}): {why}", variable.name, variable.raw),
        ))
    }
}

/// The boolean words a switch's environment variable may hold.
fn switch_value(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn not_a_switch(name: &str, value: &str) -> ConfigError {
    ConfigError(command_with_env_help().error(
        clap::error::ErrorKind::InvalidValue,
        format!("{name}={value:?}: expected true or false (or 1/0, yes/no, on/off)"),
    ))
}

/// The environment variable of a flag: `upstream-url` → `WNOLOGY_UPSTREAM_URL`.
pub fn env_var_name(long_flag: &str) -> String {
    format!("{ENV_PREFIX}{}", long_flag.replace('-', "_").to_uppercase())
}

/// The command with each gateway flag's help naming its environment variable.
fn command_with_env_help() -> clap::Command {
    Cli::command().mut_args(|arg| match arg.get_long() {
        Some(long) if long != "help" && long != "version" => {
            let var = env_var_name(long);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [env: {var}]"))
        }
        _ => arg,
    })
}

/// The Markdown settings table README.md carries (`wnology-gateway settings` prints it).
pub fn settings_markdown() -> String {
    let mut table = String::from(
        "| Name | Flag | Environment variable | Default | Meaning |\n|---|---|---|---|---|\n",
    );
    for arg in Cli::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.as_slice() {
            [] if arg.get_action().takes_values() => "–".to_string(),
            [] => "off".to_string(),
            values => format!("`{}`", values.join(",")),
        };
        let meaning = arg
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default()
            .replace('|', "\\|");
        table.push_str(&format!(
            "| {} | `--{long}` | `{}` | {default} | {meaning} |\n",
            long.replace('-', " "),
            env_var_name(long),
        ));
    }
    table
}

/// Parses `250ms`, `90s`, `5m`, `2h`, `7d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 250ms, 90s, 5m, 7d)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// An environment made of `pairs`, for the tests of the modules that read one.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_env as env;

    #[test]
    fn defaults() {
        let cli = Cli::load(["gw"], &env(&[])).unwrap();
        assert_eq!(cli.settings.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(cli.settings.upstream_url, "https://api.app.wnology.io");
        assert_eq!(cli.settings.accept_version, "^1.30.0");
    }

    #[test]
    fn environment_fills_flags_and_command_line_wins() {
        let source = env(&[
            ("WNOLOGY_UPSTREAM_URL", "https://api.losant.com"),
            ("WNOLOGY_LISTEN", "127.0.0.1:1"),
        ]);
        let cli = Cli::load(["gw", "--listen", "127.0.0.1:2"], &source).unwrap();
        assert_eq!(cli.settings.upstream_url, "https://api.losant.com");
        assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:2");
    }

    #[test]
    fn bad_environment_value_is_an_error_naming_the_variable() {
        let error = Cli::load(["gw"], &env(&[("WNOLOGY_LISTEN", "nowhere")])).unwrap_err();
        assert!(
            error.to_string().contains(
                r#"WNOLOGY_LISTEN="nowhere" (for --listen <LISTEN>): invalid socket address"#
            ),
            "{error}"
        );
        // A custom parser's reason is kept.
        let error = Cli::load(["gw"], &env(&[("WNOLOGY_UPSTREAM_TIMEOUT", "soon")])).unwrap_err();
        assert!(
            error.to_string().contains("WNOLOGY_UPSTREAM_TIMEOUT"),
            "{error}"
        );
        // As with clap's own variables, the command line replaces the variable unread.
        let both = Cli::load(
            ["gw", "--listen", "127.0.0.1:2"],
            &env(&[("WNOLOGY_LISTEN", "nowhere")]),
        );
        assert!(both.is_ok());
    }

    #[test]
    fn a_list_variable_is_split_and_the_command_line_replaces_it() {
        let source = env(&[("WNOLOGY_DENY_RPCS", "OrgService/Delete,MeService/Delete")]);
        let cli = Cli::load(["gw"], &source).unwrap();
        assert_eq!(
            cli.settings.deny_rpcs,
            ["OrgService/Delete", "MeService/Delete"]
        );
        let cli = Cli::load(["gw", "--deny-rpcs", "MeService/Get"], &source).unwrap();
        assert_eq!(cli.settings.deny_rpcs, ["MeService/Get"]);
    }

    /// The variables are read for the gateway's flags whatever runs: a subcommand too.
    #[test]
    fn variables_apply_beside_a_subcommand() {
        let source = env(&[("WNOLOGY_LISTEN", "127.0.0.1:7")]);
        let cli = Cli::load(["gw", "routes"], &source).unwrap();
        assert!(matches!(cli.command, Some(Command::Routes)));
        assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:7");
    }

    /// A switch's variable must say yes or no: a typo is not silently "off".
    #[cfg(feature = "sandbox")]
    #[test]
    fn a_switch_variable_must_be_a_boolean_word() {
        let error = Cli::load(["gw"], &env(&[("WNOLOGY_SANDBOX", "maybe")])).unwrap_err();
        assert!(
            error.to_string().contains("expected true or false"),
            "{error}"
        );
        let on = Cli::load(["gw"], &env(&[("WNOLOGY_SANDBOX", "Yes")])).unwrap();
        assert!(on.settings.sandbox);
        let off = Cli::load(["gw"], &env(&[("WNOLOGY_SANDBOX", "off")])).unwrap();
        assert!(!off.settings.sandbox);
    }

    #[test]
    fn readme_settings_table_matches_the_flags() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&settings_markdown()),
            "README.md's settings table is stale: run `wnology-gateway settings`"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
    }
}

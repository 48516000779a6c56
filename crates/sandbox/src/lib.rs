//! An in-memory, stateful simulator ("sandbox") of the WEGnology / Losant platform REST API,
//! for the 42 actions the gateway translates (Me, Organizations, Organization, Instance
//! Organization; API 1.30.0).
//!
//! It serves the upstream's paths, methods, query parameters and JSON bodies with the same
//! response shapes, checks tokens and scopes, validates input as the upstream's schemas say, and
//! keeps state: organizations, members, invitations, recent items, passwords, two-factor
//! settings and tokens change as the actions say. Usage figures are deterministic synthetic
//! series. Its JSON is built from its own models, independently of the gateway's protobuf
//! messages.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wnology_sandbox::{Sandbox, SandboxOptions};
//! let sandbox = Sandbox::new(SandboxOptions::default())?;
//! for token in sandbox.tokens() {
//!     println!("{}  {}  [{}]", token.token, token.description, token.scopes.join(", "));
//! }
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! sandbox.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! The crate is an independent oracle of the upstream: it depends on nothing of the gateway
//! (`wnology-gateway`), so the gateway's tests check their translation against a second,
//! separately written reading of the API. The gateway's `--sandbox` flag and `sandbox`
//! subcommand use it through the gateway's `sandbox` feature; the `wnology-sandbox` binary runs
//! it alone ([`cli`]).
//!
//! Module map: [`seed`] (initial state and its JSON format, documented ids and tokens),
//! `actions` (the table of the 42 actions and their scopes), `auth` (tokens, scopes),
//! `query` / `validate` (input validation), `schemas` (the upstream's schema data: body
//! schemas, `summary` keys), `time` (timestamps as the upstream writes them), `state` (the
//! store and access rules), `handlers` (what each action does), `render` (response bodies),
//! `usage` (synthetic usage series), `glob` (the `GET /orgs` filter), `routes` (the axum
//! router), `error` (error bodies: see [`ApiError`] for the `type` names), [`cli`] (the
//! standalone command line). The imports between them form no cycle: `schemas` and `time`
//! are leaves that `query`, `render` and `usage` share.
//!
//! Where the reference material leaves behaviour undocumented, each module's docs state the
//! sandbox's choice.
//!
//! # Known differences from the real service
//!
//! - Error `type` strings are plausible Losant-style names ([`ApiError`]); the upstream does not
//!   publish its list. Foreign organizations and instances answer 404, not 403.
//! - Query parameters an action does not declare are rejected (400), except `_actions`,
//!   `_links` and `_embedded`; the real service may ignore them.
//! - `summaryInclude` / `summaryExclude`: all fields by default, include narrows, exclude wins.
//! - Usage numbers are synthetic (but deterministic and per caller); the default window is the
//!   last 30 days, negative times count back from now, a request may span at most
//!   [`MAX_POINTS`] points, and payload source names are invented.
//! - Two-factor codes are not TOTP: [`TWO_FACTOR_CODE`] is the only valid code.
//!   `POST /me/verify-email` verifies at once; `allowUnverified` is not enforced (unverified
//!   users may call every action). Email changes apply at once (no `requestedEmail` step).
//! - `requestedScopes` entries are checked for the shape of a scope name only; `cardToken` is
//!   accepted and dropped; organization limits, `disabledAt` and `isReadOnly` are stored and
//!   shown but not enforced.
//! - Invitation `ttl` is in milliseconds; `dismiss` hides an invitation from the invitee only.
//! - JSON object keys come out in alphabetical order.
// A library prints nothing: what to print (the token banner) is returned to the binaries.
#![warn(clippy::print_stdout)]

mod actions;
mod auth;
pub mod cli;
mod error;
pub mod faults;
mod glob;
mod handlers;
mod query;
mod render;
mod routes;
mod schemas;
pub mod seed;
mod state;
mod time;
mod usage;
mod validate;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicU64, atomic::Ordering},
    time::Duration,
};

pub use auth::TWO_FACTOR_CODE;
pub use error::ApiError;
pub use routes::MAX_BODY_BYTES;
pub use seed::{
    DEMO_EDIT_ORG_ID, DEMO_INSTANCE_ID, DEMO_INVITE_ID, DEMO_ORG_APPLICATION_ID, DEMO_ORG_ID,
    DEMO_ORG_INVITE_ID, DEMO_TOKEN, DEMO_USER_APPLICATION_ID, DEMO_USER_DASHBOARD_ID,
    DEMO_USER_EMAIL, DEMO_USER_ID, DEMO_USER_PASSWORD, EXPIRED_INVITE_ID, INSTANCE_ADMIN_TOKEN,
    INSTANCE_ONLY_ORG_ID, INSTANCE_ORG_ID, ORG_READ_TOKEN, SECOND_USER_EMAIL, SECOND_USER_ID,
    SECOND_USER_ORG_ID, SECOND_USER_PASSWORD, SECOND_USER_TOKEN, Seed, THIRD_USER_ID,
    USER_READ_TOKEN,
};
pub use usage::{DEFAULT_WINDOW_MS, MAX_POINTS};

use state::Store;

/// How to start a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxOptions {
    /// A seed JSON file replacing the built-in [`Seed::demo`] (format: [`seed`] module docs).
    pub seed: Option<PathBuf>,
    /// Lifetime of invitations that do not set their own `ttlMs` (seeded ones and every
    /// invitation created through `POST /orgs/{orgId}/invites`).
    pub invite_ttl: Duration,
    /// The faults it starts with (off by default; see [`faults`]).
    pub faults: faults::Faults,
}

impl Default for SandboxOptions {
    /// The built-in seed, invitations valid for 7 days.
    fn default() -> Self {
        SandboxOptions {
            seed: None,
            invite_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            faults: faults::Faults::default(),
        }
    }
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The seed file could not be read.
    #[error("cannot read the sandbox seed file {path}: {source}")]
    ReadSeed {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The seed file is not JSON in the seed format.
    #[error("the sandbox seed file {path} is not a valid seed: {source}")]
    ParseSeed {
        /// The file.
        path: PathBuf,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The seed parses but is inconsistent (bad id, dangling reference, duplicate token, ...).
    #[error("invalid sandbox seed: {0}")]
    InvalidSeed(String),
    /// The listener could not be bound (standalone sandbox, [`cli::Standalone::bind`]).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A documented token of the seed, for printing at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxToken {
    /// The bearer token.
    pub token: String,
    /// Who it acts as and what it is for.
    pub description: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// Shared state behind [`Sandbox`].
struct Inner {
    store: Mutex<Store>,
    requests: AtomicU64,
    tokens: Vec<SandboxToken>,
    faults: faults::FaultSwitch,
}

impl Inner {
    /// Locks the store. A handler never panics by design; should one ever do, the store is
    /// still served (a sandbox favours staying up over strict consistency).
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running sandbox's state and router. Cloning is cheap (an `Arc`); clones share state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sandbox")
            .field("tokens", &self.inner.tokens.len())
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds a sandbox from the built-in seed or `options.seed`.
    pub fn new(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let seed = match &options.seed {
            None => Seed::demo(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SandboxError::ReadSeed {
                        path: path.clone(),
                        source,
                    })?;
                serde_json::from_str(&text).map_err(|source| SandboxError::ParseSeed {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let sandbox = Sandbox::from_seed(seed, options.invite_ttl)?;
        sandbox.faults().set(options.faults);
        Ok(sandbox)
    }

    /// The fault switch (also reachable at [`faults::FAULTS_PATH`] on the sandbox's port).
    pub fn faults(&self) -> &faults::FaultSwitch {
        &self.inner.faults
    }

    /// Builds a sandbox from a seed value.
    pub fn from_seed(mut seed: Seed, invite_ttl: Duration) -> Result<Sandbox, SandboxError> {
        seed.normalize();
        seed.check().map_err(SandboxError::InvalidSeed)?;
        let tokens = seed
            .tokens
            .iter()
            .map(|token| SandboxToken {
                token: token.token.clone(),
                description: token.description.clone(),
                scopes: token.scopes.clone(),
            })
            .collect();
        let invite_ttl_ms = u64::try_from(invite_ttl.as_millis()).unwrap_or(u64::MAX);
        let inner = Inner {
            store: Mutex::new(Store::new(seed, invite_ttl_ms)),
            requests: AtomicU64::new(0),
            tokens,
            faults: faults::FaultSwitch::default(),
        };
        Ok(Sandbox {
            inner: Arc::new(inner),
        })
    }

    /// The axum router serving the 42 actions (state shared with this sandbox).
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.inner))
    }

    /// Serves HTTP/1 and HTTP/2 (cleartext) on `listener` until `shutdown` completes, then
    /// finishes in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The seed's tokens (token, description, scopes), in seed order. Tokens minted later
    /// (`me.refreshToken`, `me.changePassword`) are not listed.
    pub fn tokens(&self) -> Vec<SandboxToken> {
        self.inner.tokens.clone()
    }

    /// What to print at start-up: where the sandbox serves and its documented tokens (fixed,
    /// public test values, not secrets), one line each.
    pub fn banner(&self, url: &str) -> String {
        let mut text = format!(
            "sandbox upstream (in-memory simulator of the REST API) at {url}\n\
             sandbox tokens (send as gRPC metadata `authorization: Bearer <token>`):\n"
        );
        for token in &self.inner.tokens {
            text.push_str(&format!(
                "  {:<36} {} [{}]\n",
                token.token,
                token.description,
                token.scopes.join(", ")
            ));
        }
        text
    }

    /// Number of HTTP requests received so far, including 404s and 405s.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

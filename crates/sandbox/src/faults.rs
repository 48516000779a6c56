//! Faults on demand, to show offline what the gateway does when its upstream struggles: a
//! share of the API's calls answer 503 or hang. Set at start (`--sandbox-faults 503:0.5`) or
//! at run time on the sandbox's own port:
//!
//! - `GET /_sandbox/faults`: the faults now, `{"mode":"503","share":0.5}`;
//! - `PUT /_sandbox/faults` with that JSON body (or `{"mode":"off"}`): changes them.
//!
//! The share is applied deterministically (0.5 fails every second call, 1 every call), so a
//! demonstration or a test sees exactly the share asked for. A hanging call answers 504 after
//! [`HANG_FOR`], by which time every client has given up. The admin route itself never fails.

use std::{
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The admin route's path.
pub const FAULTS_PATH: &str = "/_sandbox/faults";

/// How long a hanging call hangs before it answers 504.
pub const HANG_FOR: Duration = Duration::from_secs(30);

/// How a failing call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FaultMode {
    /// No faults.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// `503 Service Unavailable` with the upstream's JSON error shape.
    #[serde(rename = "503")]
    Unavailable,
    /// No answer for [`HANG_FOR`].
    #[serde(rename = "hang")]
    Hang,
}

/// Which calls fail, and how.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// How they fail.
    pub mode: FaultMode,
    /// The share of calls that fail, from 0 to 1.
    #[serde(default = "one")]
    pub share: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            mode: FaultMode::Off,
            share: 0.0,
        }
    }
}

impl Faults {
    /// Refuses a share outside 0 to 1.
    fn checked(self) -> Result<Faults, String> {
        if (0.0..=1.0).contains(&self.share) {
            Ok(self)
        } else {
            Err(format!("share {} is not from 0 to 1", self.share))
        }
    }
}

impl FromStr for Faults {
    type Err = String;

    /// `off`, `503`, `hang`, or either with a share: `503:0.25`, `hang:0.1`.
    fn from_str(text: &str) -> Result<Faults, String> {
        let (mode, share) = match text.trim().split_once(':') {
            Some((mode, share)) => (mode, Some(share)),
            None => (text.trim(), None),
        };
        let mode = match mode {
            "off" => FaultMode::Off,
            "503" => FaultMode::Unavailable,
            "hang" => FaultMode::Hang,
            other => return Err(format!("`{other}`: expected off, 503 or hang")),
        };
        let share = match share {
            Some(share) => share
                .trim()
                .parse()
                .map_err(|_| format!("`{share}` is not a share from 0 to 1"))?,
            None if mode == FaultMode::Off => 0.0,
            None => 1.0,
        };
        Faults { mode, share }.checked()
    }
}

/// The faults in force and the running share. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    inner: Arc<Mutex<(Faults, f64)>>,
}

impl FaultSwitch {
    /// A switch set to `faults`.
    pub fn new(faults: Faults) -> FaultSwitch {
        FaultSwitch {
            inner: Arc::new(Mutex::new((faults, 0.0))),
        }
    }

    /// The faults in force.
    pub fn get(&self) -> Faults {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Replaces the faults (and restarts the share count).
    pub fn set(&self, faults: Faults) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = (faults, 0.0);
    }

    /// How the next call fails, if it does: each call adds the share to a running sum, and
    /// a call that brings it to 1 fails (and takes 1 off).
    fn next(&self) -> FaultMode {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (faults, credit) = &mut *guard;
        if faults.mode == FaultMode::Off || faults.share <= 0.0 {
            return FaultMode::Off;
        }
        *credit += faults.share;
        if *credit >= 1.0 - 1e-9 {
            *credit -= 1.0;
            faults.mode
        } else {
            FaultMode::Off
        }
    }
}

/// The admin route, `GET` and `PUT` [`FAULTS_PATH`].
pub(crate) fn admin(switch: FaultSwitch) -> Router {
    Router::new().route(FAULTS_PATH, get(show).put(change).with_state(switch))
}

async fn show(State(switch): State<FaultSwitch>) -> Json<Faults> {
    Json(switch.get())
}

async fn change(State(switch): State<FaultSwitch>, body: axum::body::Bytes) -> Response {
    let faults = serde_json::from_slice::<Faults>(&body)
        .map_err(|e| e.to_string())
        .and_then(Faults::checked);
    match faults {
        Ok(faults) => {
            switch.set(faults);
            tracing::info!(mode = ?faults.mode, share = faults.share, "sandbox faults changed");
            Json(faults).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "Validation", "message": message})),
        )
            .into_response(),
    }
}

/// The middleware: fails the call as the switch says, else serves it.
pub(crate) async fn inject(
    State(switch): State<FaultSwitch>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == FAULTS_PATH {
        return next.run(request).await;
    }
    match switch.next() {
        FaultMode::Off => next.run(request).await,
        FaultMode::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"type": "ServiceUnavailable", "message": "sandbox fault injection: 503"})),
        )
            .into_response(),
        FaultMode::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({"type": "Timeout", "message": "sandbox fault injection: hang"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!("off".parse(), Ok(Faults::default()));
        let half: Faults = "503:0.5".parse().unwrap();
        assert_eq!((half.mode, half.share), (FaultMode::Unavailable, 0.5));
        let hang: Faults = "hang".parse().unwrap();
        assert_eq!((hang.mode, hang.share), (FaultMode::Hang, 1.0));
        assert!("503:2".parse::<Faults>().is_err());
        assert!("teapot".parse::<Faults>().is_err());
    }

    #[test]
    fn the_share_is_exact() {
        let switch = FaultSwitch::new("503:0.25".parse().unwrap());
        let failed = (0..100)
            .filter(|_| switch.next() == FaultMode::Unavailable)
            .count();
        assert_eq!(failed, 25);
        switch.set(Faults::default());
        assert!((0..10).all(|_| switch.next() == FaultMode::Off));
    }
}

//! Stage 2, admit: whether this call may proceed at all, decided before anything is looked
//! up or sent — a concurrency slot (`--max-concurrency`), the deny list (`--deny-rpcs`) and a
//! bearer token.

use std::collections::HashSet;

use http::HeaderValue;
use tonic::metadata::MetadataMap;

use crate::{
    error::GatewayError,
    metrics::Metrics,
    overload::{ConcurrencyBudget, Slot},
    routes::Route,
};

/// What admission checks, built once from the settings.
#[derive(Debug)]
pub(super) struct Admission {
    /// `--max-concurrency`.
    pub budget: ConcurrencyBudget,
    /// Actions refused locally (`--deny-rpcs`).
    pub denied: HashSet<&'static str>,
}

/// An admitted call: it holds a slot until it is dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    /// The call's concurrency slot.
    pub slot: Slot,
    /// The caller's `authorization`, to pass upstream unchanged.
    pub authorization: HeaderValue,
}

impl Admission {
    /// Admits the call, or says why not. A shed call is counted here.
    pub(super) fn admit(
        &self,
        route: &Route,
        metadata: &MetadataMap,
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        let Some(slot) = self.budget.try_take() else {
            metrics.shed(route.service.grpc_name());
            return Err(GatewayError::Overloaded);
        };
        if self.denied.contains(route.action) {
            return Err(GatewayError::Denied);
        }
        let authorization = bearer_authorization(metadata)?;
        Ok(Admitted {
            slot,
            authorization,
        })
    }
}

/// The caller's `authorization` metadata, which must be `Bearer <token>`, as the header to pass
/// upstream unchanged (marked sensitive so no debug output shows it).
pub fn bearer_authorization(metadata: &MetadataMap) -> Result<HeaderValue, GatewayError> {
    let value = metadata
        .get("authorization")
        .ok_or(GatewayError::MissingToken)?;
    let bytes = value.as_bytes();
    let has_token = bytes.len() > 7
        && bytes[..7].eq_ignore_ascii_case(b"bearer ")
        && bytes[7..].iter().any(|b| !b.is_ascii_whitespace());
    if !has_token {
        return Err(GatewayError::MissingToken);
    }
    let mut header = HeaderValue::from_bytes(bytes).map_err(|_| GatewayError::MissingToken)?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            bearer_authorization(&metadata),
            Err(GatewayError::MissingToken)
        ));
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearer    "] {
            metadata.insert("authorization", bad.parse().unwrap());
            assert!(
                matches!(
                    bearer_authorization(&metadata),
                    Err(GatewayError::MissingToken)
                ),
                "{bad}"
            );
        }
        metadata.insert("authorization", "bearer abc.def".parse().unwrap());
        assert_eq!(bearer_authorization(&metadata).unwrap(), "bearer abc.def");
    }
}

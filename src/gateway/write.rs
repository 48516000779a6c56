//! Stage 5, store and invalidate: a write (or a read that changes something, such as
//! `MeService/RefreshToken`) runs to its end in a task of its own, and then makes stale what
//! its route says it changes ([`Route::invalidates`]), resolved against the call: in this
//! replica, then (with the shared tier) in Redis and on every other replica, before replying.

use std::future::Future;

use serde_json::Value;

use super::{Gateway, cached::org_id};
use crate::{
    cache::{Fetched, Scope, TokenId},
    error::GatewayError,
    json::UpstreamJson,
    overload::Slot,
    routes::{self, Route},
};

impl Gateway {
    /// Runs a write to its end in a task of its own, holding the call's slot, and then drops
    /// what it made stale: a caller who goes away neither loses the write's outcome (and its
    /// invalidations) nor frees a slot while the upstream still works on the write.
    pub(super) async fn write<Resp, F>(
        &self,
        route: &'static Route,
        token: TokenId,
        request_json: Value,
        slot: Slot,
        load: F,
    ) -> Result<Fetched, GatewayError>
    where
        Resp: UpstreamJson + Send + Sync + 'static,
        F: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            let result = load.await;
            if !route.invalidates.is_empty() && is_ok_or_outcome_unknown(&result) {
                // Rare (one write names its organization only in its answer): decode it again.
                let answer_json = result
                    .as_ref()
                    .ok()
                    .filter(|_| route.invalidates.contains(&routes::Scope::AnswerOrg))
                    .and_then(|fetched| Resp::decode(fetched.answer.clone()).ok())
                    .and_then(|answer| answer.to_upstream_json().ok());
                let scopes: Vec<Scope> =
                    stale_scopes(route, token, &request_json, answer_json.as_ref()).collect();
                gateway.invalidate(&scopes).await;
            }
            drop(slot);
            result
        });
        task.await.unwrap_or_else(|error| {
            Err(GatewayError::Internal(format!(
                "write task failed: {error}"
            )))
        })
    }

    /// Drops what a write changed here, then in the shared tier and on the other replicas
    /// (bounded by `--cache-redis-timeout`; retried in the background if Redis is down).
    async fn invalidate(&self, scopes: &[Scope]) {
        for scope in scopes {
            self.inner.cache.invalidate(*scope);
        }
        if let Some(shared) = &self.inner.shared
            && self.inner.shared_invalidation
        {
            shared.invalidate(scopes).await;
        }
    }
}

/// A write whose answer was lost may still have been applied: invalidate as for a success.
fn is_ok_or_outcome_unknown(result: &Result<Fetched, GatewayError>) -> bool {
    matches!(
        result,
        Ok(_) | Err(GatewayError::OutcomeUnknown(_) | GatewayError::DeadlineExceeded)
    )
}

/// What a write on `route` by `token` made stale, from its request and (when it names the
/// organization only there) its answer.
fn stale_scopes(
    route: &'static Route,
    token: TokenId,
    request: &Value,
    answer: Option<&Value>,
) -> impl Iterator<Item = Scope> {
    let body = request.get("body");
    let field = move |name: &str| body.and_then(|b| b.get(name));
    route.invalidates.iter().filter_map(move |rule| match rule {
        routes::Scope::Org => org_id(request.get("orgId")).map(Scope::Org),
        routes::Scope::AnswerOrg => org_id(answer.and_then(|a| a.get("orgId"))).map(Scope::Org),
        routes::Scope::DestinationOrg => (field("destinationType")
            == Some(&Value::from("organization")))
        .then(|| org_id(field("destinationId")).map(Scope::Org))
        .flatten(),
        routes::Scope::OrgLists => Some(Scope::OrgLists),
        routes::Scope::CallerMe => Some(Scope::TokenMe(token)),
        routes::Scope::CallerAll => Some(Scope::TokenAll(token)),
        routes::Scope::Invitations => Some(Scope::Invitations),
        routes::Scope::Everything => Some(Scope::Everything),
        routes::Scope::EverythingIfTokensRevoked => (field("invalidateExistingTokens")
            == Some(&Value::Bool(true))
            || field("tokenCutoff").is_some())
        .then_some(Scope::Everything),
        routes::Scope::EverythingIfPasswordSet => {
            field("password").is_some().then_some(Scope::Everything)
        }
    })
}

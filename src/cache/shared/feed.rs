//! The invalidation feed: one pub/sub channel ([`FEED_CHANNEL`]) every replica subscribes to.
//!
//! Messages (first byte):
//! - `I` + instance + sealed scopes: a write's invalidations, sealed under the feed key (no
//!   token id or organization id travels in clear), applied through the handler the gateway
//!   gave (its local tier's `invalidate`);
//! - `H` + instance: a heartbeat each replica publishes every [`HEARTBEAT`]; seeing its own
//!   heartbeat come back proves the subscription is live end to end;
//! - `F`/`A` + value name: a leader filled / abandoned a lease (see [`super::lease`]).
//!
//! The feed is *trusted* while this replica's heartbeat came back within [`UNTRUSTED_AFTER`].
//! When it stops being trusted, and when it is trusted again (messages may have been missed
//! meanwhile), and on every resubscription, the handler gets `Scope::Everything`: the local
//! tier drops its copies. While untrusted, the gateway caps local fills to
//! [`UNTRUSTED_LOCAL_TTL`] (see `SharedTier::local_ttl_cap`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    clients::SubscriberClient,
    interfaces::{EventInterface, PubsubInterface},
};
use tokio::sync::watch;

use super::{
    generations::FEED_CHANNEL,
    metrics::SharedTierMetrics,
    seal::SealKey,
    store::{Store, StoreError},
};
use crate::cache::{Scope, TokenId};

/// How often each replica publishes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(150);
/// How long without its own heartbeat before a replica stops trusting its local copies.
pub const UNTRUSTED_AFTER: Duration = Duration::from_millis(500);
/// The longest a local copy filled while the feed is untrusted may be served.
pub const UNTRUSTED_LOCAL_TTL: Duration = Duration::from_secs(1);

/// What the gateway does with invalidations from other replicas.
pub type Handler = Arc<dyn Fn(&[Scope]) + Send + Sync>;

/// What happened to a lease's fill, as waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillEvent {
    /// Nothing heard yet.
    Pending,
    /// The leader stored the answer.
    Filled,
    /// The leader gave up (failed, or a write came in between).
    Abandoned,
}

/// The feed's state, shared by its tasks and the tier.
pub struct Feed {
    instance: String,
    seal: SealKey,
    handler: Handler,
    metrics: SharedTierMetrics,
    started: Instant,
    /// Milliseconds after `started` when this replica's heartbeat last came back (0: never).
    heard: AtomicU64,
    trusted: AtomicBool,
    fills: Mutex<HashMap<String, watch::Sender<FillEvent>>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("trusted", &self.is_trusted())
            .finish_non_exhaustive()
    }
}

/// A waiter's subscription to one value's fill events.
pub struct FillWatch {
    feed: Arc<Feed>,
    name: String,
    /// The events.
    pub events: watch::Receiver<FillEvent>,
}

impl Drop for FillWatch {
    fn drop(&mut self) {
        let mut fills = self.feed.lock_fills();
        if fills
            .get(&self.name)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            fills.remove(&self.name);
        }
    }
}

fn encode_scopes(scopes: &[Scope]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scopes.len() * 33);
    for scope in scopes {
        match scope {
            Scope::Org(org) => {
                out.push(1);
                out.extend_from_slice(org);
            }
            Scope::OrgLists => out.push(2),
            Scope::TokenMe(token) => {
                out.push(3);
                out.extend_from_slice(&token.0);
            }
            Scope::TokenAll(token) => {
                out.push(4);
                out.extend_from_slice(&token.0);
            }
            Scope::Invitations => out.push(5),
            Scope::Everything => out.push(6),
        }
    }
    out
}

fn decode_scopes(mut bytes: &[u8]) -> Option<Vec<Scope>> {
    let mut scopes = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let take = |n: usize| (rest.len() >= n).then(|| rest.split_at(n));
        let (scope, rest) = match tag {
            1 => {
                let (org, rest) = take(24)?;
                (Scope::Org(org.try_into().ok()?), rest)
            }
            2 => (Scope::OrgLists, rest),
            3 | 4 => {
                let (token, rest) = take(32)?;
                let token = TokenId(token.try_into().ok()?);
                let scope = if tag == 3 {
                    Scope::TokenMe(token)
                } else {
                    Scope::TokenAll(token)
                };
                (scope, rest)
            }
            5 => (Scope::Invitations, rest),
            6 => (Scope::Everything, rest),
            _ => return None,
        };
        scopes.push(scope);
        bytes = rest;
    }
    Some(scopes)
}

impl Feed {
    /// A feed for this replica (`instance`: a random id), delivering to `handler`.
    pub fn new(seal: SealKey, handler: Handler, metrics: SharedTierMetrics) -> Feed {
        Feed {
            instance: hex::encode(rand::random::<[u8; 16]>()),
            seal,
            handler,
            metrics,
            started: Instant::now(),
            heard: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            fills: Mutex::new(HashMap::new()),
        }
    }

    fn lock_fills(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<FillEvent>>> {
        self.fills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this replica's copies may be trusted: the feed delivered its own heartbeat
    /// within [`UNTRUSTED_AFTER`]. Cheap (two atomic loads).
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire) && self.heard_recently()
    }

    fn heard_recently(&self) -> bool {
        let heard = self.heard.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64;
        heard != 0 && now.saturating_sub(heard) <= UNTRUSTED_AFTER.as_millis() as u64
    }

    /// Subscribes to the fill events of the value `name`.
    pub fn watch_fill(self: &Arc<Feed>, name: &str) -> FillWatch {
        let events = self
            .lock_fills()
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(FillEvent::Pending).0)
            .subscribe();
        FillWatch {
            feed: Arc::clone(self),
            name: name.to_owned(),
            events,
        }
    }

    /// The `I` message carrying `scopes`.
    pub fn invalidation_message(&self, scopes: &[Scope]) -> Vec<u8> {
        let sealed = self
            .seal
            .seal_bytes(b"invalidation", &encode_scopes(scopes));
        [b"I", self.instance.as_bytes(), &sealed].concat()
    }

    /// Handles one message of the channel.
    pub fn receive(&self, message: &[u8]) {
        let Some((&kind, rest)) = message.split_first() else {
            return;
        };
        let own = rest.starts_with(self.instance.as_bytes());
        match kind {
            b'H' if own => {
                let now = (self.started.elapsed().as_millis() as u64).max(1);
                self.heard.store(now, Ordering::Release);
            }
            b'I' if !own && rest.len() > self.instance.len() => {
                let sealed = &rest[self.instance.len()..];
                match self
                    .seal
                    .open_bytes(b"invalidation", sealed)
                    .ok()
                    .as_deref()
                    .and_then(decode_scopes)
                {
                    Some(scopes) => {
                        self.metrics.invalidations_received.inc();
                        (self.handler)(&scopes);
                    }
                    None => self.metrics.error("unopenable"),
                }
            }
            b'F' | b'A' => {
                let event = if kind == b'F' {
                    FillEvent::Filled
                } else {
                    FillEvent::Abandoned
                };
                if let Some(sender) = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|name| self.lock_fills().get(name).cloned())
                {
                    sender.send_replace(event);
                }
            }
            _ => {}
        }
    }

    /// Re-evaluates trust; on a change logs one warning and drops the local copies.
    fn check_trust(&self) {
        let now = self.heard_recently();
        if self.trusted.swap(now, Ordering::AcqRel) == now {
            return;
        }
        self.metrics.feed_trusted.set(i64::from(now));
        if now {
            tracing::warn!("shared cache invalidation feed is live again: trusting local copies");
        } else {
            tracing::warn!(
                "shared cache invalidation feed lost: local copies are dropped and kept at most 1 s until it is back"
            );
        }
        self.drop_local(if now { "feed_back" } else { "feed_lost" });
    }

    /// Drops every local copy (invalidations may have been missed), counted by `reason`.
    fn drop_local(&self, reason: &'static str) {
        self.metrics.local_drop(reason);
        (self.handler)(&[Scope::Everything]);
    }
}

/// Runs the feed until the tasks are aborted: subscription (retried until it succeeds, kept by
/// fred across reconnects, and asked again while the heartbeat does not come back), message
/// handling, heartbeats and the trust check.
pub fn spawn(
    feed: Arc<Feed>,
    store: Arc<Store>,
    subscriber: SubscriberClient,
) -> Vec<tokio::task::JoinHandle<()>> {
    let listen = {
        let feed = Arc::clone(&feed);
        let subscriber = subscriber.clone();
        tokio::spawn(async move {
            let mut messages = subscriber.message_rx();
            let mut reconnects = subscriber.reconnect_rx();
            let _manager = subscriber.manage_subscriptions();
            while subscriber.subscribe(FEED_CHANNEL).await.is_err() {
                tokio::time::sleep(HEARTBEAT).await;
            }
            // From one window on: the first heartbeat needs that long to come back.
            let first = tokio::time::Instant::now() + UNTRUSTED_AFTER;
            let mut check = tokio::time::interval_at(first, UNTRUSTED_AFTER);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // fred subscribes again after a reconnect, but not after Redis refused
                    // that (an ACL that forbade the channel for a while): while this
                    // replica's heartbeat does not come back, ask again.
                    _ = check.tick() => if !feed.heard_recently() {
                        let _ = tokio::time::timeout(HEARTBEAT, subscriber.subscribe(FEED_CHANNEL)).await;
                    },
                    message = messages.recv() => match message {
                        Ok(message) => {
                            if let Some(bytes) = message.value.as_bytes() {
                                feed.receive(bytes);
                            }
                        }
                        // Messages were dropped: what they invalidated is unknown.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "shared cache feed lagged: local copies dropped");
                            feed.drop_local("lagged");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    // Messages published while disconnected are lost.
                    Ok(_) = reconnects.recv() => {
                        tracing::info!("shared cache feed (re)connected: local copies dropped");
                        feed.drop_local("reconnected");
                    }
                }
            }
        })
    };
    let heartbeat = {
        let feed = Arc::clone(&feed);
        tokio::spawn(async move {
            let message = [b"H", feed.instance.as_bytes()].concat();
            let mut ticks = tokio::time::interval(HEARTBEAT);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let _ = publish(&store, message.clone()).await;
            }
        })
    };
    let trust = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            feed.check_trust();
        }
    });
    vec![listen, heartbeat, trust]
}

/// Publishes one message on the feed.
pub async fn publish(store: &Store, message: Vec<u8>) -> Result<(), StoreError> {
    store
        .run("publish", async {
            let _: i64 = store.client().publish(FEED_CHANNEL, message).await?;
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::shared::settings::CacheSecret;

    #[test]
    fn scopes_round_trip_sealed_and_own_messages_are_ignored() {
        let secret = CacheSecret::new(vec![5; 32]).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let handler: Handler =
            Arc::new(move |scopes: &[Scope]| sink.lock().unwrap().extend_from_slice(scopes));
        let a = Feed::new(
            SealKey::for_feed(&secret),
            Arc::clone(&handler),
            SharedTierMetrics::default(),
        );
        let b = Feed::new(
            SealKey::for_feed(&secret),
            handler,
            SharedTierMetrics::default(),
        );
        let scopes = [
            Scope::Org(*b"5f0123456789abcdef012345"),
            Scope::TokenAll(TokenId([9; 32])),
            Scope::TokenMe(TokenId([8; 32])),
            Scope::OrgLists,
            Scope::Invitations,
            Scope::Everything,
        ];
        let message = a.invalidation_message(&scopes);
        assert!(
            !message
                .windows(24)
                .any(|w| w == b"5f0123456789abcdef012345")
        );
        a.receive(&message);
        assert!(
            got.lock().unwrap().is_empty(),
            "a replica ignores its own invalidations"
        );
        b.receive(&message);
        assert_eq!(*got.lock().unwrap(), scopes);
        let other = Feed::new(
            SealKey::for_feed(&CacheSecret::new(vec![6; 32]).unwrap()),
            Arc::new(|_: &[Scope]| panic!("must not open")),
            SharedTierMetrics::default(),
        );
        other.receive(&message);
    }
}

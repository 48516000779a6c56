//! Redis key names: keyed hashes under subkeys of the shared secret, so a key carries no token
//! and no caller input in clear, yet every replica computes the same name.
//!
//! # Scheme
//!
//! Every name is `wg1:{sNN}:…` where `{sNN}` is a Redis Cluster hash tag naming one of
//! [`SHARDS`] shards. A caller's keys all live in one shard, chosen by a keyed hash of the
//! caller's token id, so a read's value key, lease key and every generation key it is checked
//! against share a slot (one Lua script, one round trip, also on a Cluster):
//!
//! | name | what |
//! |---|---|
//! | `wg1:{sNN}:v:<64 hex>` | a sealed answer: HMAC(name key, token id, route, request) |
//! | `wg1:{sNN}:l:<64 hex>` | the cross-replica fill lease of that answer |
//! | `wg1:{sNN}:g:o:<32 hex>` | generation of one organization (HMAC of its id) |
//! | `wg1:{sNN}:g:l`, `:g:i`, `:g:a` | generations of organization lists, invitations, everything |
//! | `wg1:{sNN}:g:m:<32 hex>`, `:g:t:<32 hex>` | generations of one token's `MeService` reads, of all its reads |
//!
//! Scopes that concern one token (`TokenMe`, `TokenAll`) live only in that token's shard; scopes
//! that concern every token (`Org`, `OrgLists`, `Invitations`, `Everything`) have one copy in each
//! shard, and an invalidation bumps all [`SHARDS`] copies before it returns. So a write through
//! token A that invalidates organization O makes stale what token B cached about O, whichever
//! shard B is in, exactly like the local tier's rules (`Scope::covers`).

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;

use super::settings::CacheSecret;
use crate::cache::{CacheKey, Scope, Scopes, TokenId};

/// How many shards (hash tags) the keys are spread over. A global scope's invalidation costs
/// one `INCR` per shard; a Cluster spreads the tier over at most this many slots.
pub const SHARDS: u16 = 16;

/// The prefix of every name: the key scheme's version.
pub const PREFIX: &str = "wg1";

/// The subkeys derived from the shared secret for naming.
#[derive(Clone)]
pub struct Namer {
    tokens: Hmac<Sha256>,
    names: Hmac<Sha256>,
}

impl std::fmt::Debug for Namer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Namer(..)")
    }
}

/// A caller's place in the key space: its token id and its shard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The token id, the same on every replica (HMAC of the `authorization` value).
    pub token: TokenId,
    shard: u16,
    token_name: [u8; 16],
}

/// The names one cached answer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryNames {
    /// The sealed answer.
    pub value: String,
    /// The fill lease.
    pub lease: String,
    /// The generations the answer is checked against, in a fixed order.
    pub generations: Vec<String>,
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A subkey of the secret for one purpose (HKDF-SHA256).
pub(crate) fn subkey(secret: &CacheSecret, purpose: &str) -> zeroize::Zeroizing<[u8; 32]> {
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(b"wnology-gateway shared cache"), secret.bytes())
        .expand(purpose.as_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

impl Namer {
    /// The naming subkeys of `secret`.
    pub fn new(secret: &CacheSecret) -> Namer {
        Namer {
            tokens: hmac(subkey(secret, "token id v1").as_ref()),
            names: hmac(subkey(secret, "key names v1").as_ref()),
        }
    }

    fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.names.clone();
        for part in parts {
            // Length-prefixed, so no two part lists hash the same bytes.
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The keyed hash behind [`Namer::token_id`], for the local tier to name tokens the same
    /// way (see [`crate::cache::ResponseCache::with_token_hmac`]).
    pub fn token_hmac(&self) -> Hmac<Sha256> {
        self.tokens.clone()
    }

    /// The caller's token id: the same on every replica sharing the secret.
    pub fn token_id(&self, authorization: &[u8]) -> TokenId {
        TokenId::under(&self.tokens, authorization)
    }

    /// Where `token`'s keys live.
    pub fn place(&self, token: TokenId) -> Placement {
        let digest = self.digest(&[b"token", &token.0]);
        let mut token_name = [0u8; 16];
        token_name.copy_from_slice(&digest[..16]);
        let shard = u16::from_be_bytes([digest[16], digest[17]]) % SHARDS;
        Placement {
            token,
            shard,
            token_name,
        }
    }

    /// The names of one cached answer and the generations it depends on (see the module docs).
    pub fn entry(&self, placement: &Placement, key: &CacheKey, scopes: &Scopes) -> EntryNames {
        let id = hex::encode(self.digest(&[
            b"value",
            &placement.token.0,
            key.route.as_bytes(),
            &key.request,
        ]));
        let shard = placement.shard;
        let mut generations = Vec::with_capacity(6);
        if let Some(org) = scopes.org {
            generations.push(self.generation(shard, &Scope::Org(org)));
        }
        if scopes.org_list {
            generations.push(self.generation(shard, &Scope::OrgLists));
        }
        if scopes.me {
            generations.push(self.generation(shard, &Scope::TokenMe(placement.token)));
        }
        generations.push(self.generation(shard, &Scope::TokenAll(placement.token)));
        if scopes.invitations {
            generations.push(self.generation(shard, &Scope::Invitations));
        }
        generations.push(self.generation(shard, &Scope::Everything));
        EntryNames {
            value: format!("{PREFIX}:{{s{shard:02}}}:v:{id}"),
            lease: format!("{PREFIX}:{{s{shard:02}}}:l:{id}"),
            generations,
        }
    }

    /// The generation key of `scope` in `shard`.
    fn generation(&self, shard: u16, scope: &Scope) -> String {
        let tag = format!("{PREFIX}:{{s{shard:02}}}:g");
        match scope {
            Scope::Org(org) => {
                format!(
                    "{tag}:o:{}",
                    hex::encode(&self.digest(&[b"org", org])[..16])
                )
            }
            Scope::OrgLists => format!("{tag}:l"),
            Scope::Invitations => format!("{tag}:i"),
            Scope::Everything => format!("{tag}:a"),
            Scope::TokenMe(token) => {
                format!("{tag}:m:{}", hex::encode(self.place(*token).token_name))
            }
            Scope::TokenAll(token) => {
                format!("{tag}:t:{}", hex::encode(self.place(*token).token_name))
            }
        }
    }

    /// Every generation key a write invalidating `scope` must bump: one in the token's shard for
    /// token scopes, one per shard for the scopes every token shares.
    pub fn invalidated(&self, scope: &Scope) -> Vec<String> {
        match scope {
            Scope::TokenMe(token) | Scope::TokenAll(token) => {
                vec![self.generation(self.place(*token).shard, scope)]
            }
            _ => (0..SHARDS)
                .map(|shard| self.generation(shard, scope))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer(byte: u8) -> Namer {
        Namer::new(&CacheSecret::new(vec![byte; 32]).unwrap())
    }

    fn key(token: TokenId, request: &[u8]) -> CacheKey {
        CacheKey {
            route: "me.payloadCounts",
            token,
            request: request.into(),
        }
    }

    #[test]
    fn names_share_one_hash_tag_and_hide_their_inputs() {
        let namer = namer(1);
        let token = namer.token_id(b"Bearer secret-token");
        let placement = namer.place(token);
        let scopes = Scopes {
            org: Some(*b"5f0123456789abcdef012345"),
            me: true,
            ..Scopes::default()
        };
        let names = namer.entry(&placement, &key(token, b"request-bytes"), &scopes);
        let tag = |name: &str| name[name.find('{').unwrap()..=name.find('}').unwrap()].to_owned();
        assert_eq!(names.generations.len(), 4);
        for name in names.generations.iter().chain([&names.value, &names.lease]) {
            assert_eq!(tag(name), tag(&names.value));
            for clear in ["secret-token", "request-bytes", "5f0123456789abcdef012345"] {
                assert!(!name.contains(clear), "{name}");
            }
        }
    }

    #[test]
    fn every_replica_names_alike_and_secrets_differ() {
        let (a, b, other) = (namer(1), namer(1), namer(2));
        let token = a.token_id(b"Bearer t");
        assert!(token == b.token_id(b"Bearer t"));
        assert!(token != other.token_id(b"Bearer t"));
        let scopes = Scopes::default();
        let entry = |n: &Namer| {
            n.entry(
                &n.place(n.token_id(b"Bearer t")),
                &key(n.token_id(b"Bearer t"), b"r"),
                &scopes,
            )
        };
        assert_eq!(entry(&a), entry(&b));
        assert_ne!(entry(&a).value, entry(&other).value);
    }

    #[test]
    fn global_scopes_reach_every_shard_and_token_scopes_their_own() {
        let namer = namer(3);
        let org = *b"5f0123456789abcdef012345";
        let org_keys = namer.invalidated(&Scope::Org(org));
        assert_eq!(org_keys.len(), usize::from(SHARDS));
        let token = namer.token_id(b"Bearer x");
        let scopes = Scopes {
            org: Some(org),
            ..Scopes::default()
        };
        let names = namer.entry(&namer.place(token), &key(token, b"r"), &scopes);
        assert!(org_keys.contains(&names.generations[0]));
        let own = namer.invalidated(&Scope::TokenAll(token));
        assert_eq!(own.len(), 1);
        assert!(names.generations.contains(&own[0]));
    }
}

//! Sealing of stored answers: XChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the
//! shared secret *and* the caller's token, with the Redis key name as associated data.
//!
//! Layout: `[version = 1][24-byte random nonce][ciphertext + 16-byte tag]`; the plaintext is
//! `[fetched at, Unix ms: u64][ttl ms: u64][upstream status: u16][answer]`. A value of another
//! version, a value moved under another key, or one sealed for another token fails to open:
//! the caller counts a miss.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::settings::CacheSecret;

/// The format version written in front of every sealed value.
pub const FORMAT_VERSION: u8 = 1;

const NONCE: usize = 24;
const HEADER: usize = 8 + 8 + 2;

/// An AEAD key for one token's values (or for the invalidation feed).
pub struct SealKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Why a value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Written by another format version.
    #[error("another format version")]
    Version,
    /// Too short to be a sealed value.
    #[error("truncated")]
    Truncated,
    /// Authentication failed: another key, another token, or tampered.
    #[error("does not authenticate")]
    Forged,
}

/// One stored answer, as sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The response message, protobuf-encoded.
    pub answer: Bytes,
    /// The upstream's HTTP status when it was fetched.
    pub upstream_status: u16,
    /// When it was fetched (wall clock, shared by replicas).
    pub fetched_at: SystemTime,
    /// Its time to live from `fetched_at`.
    pub ttl: Duration,
}

impl Entry {
    /// How long it stays fresh from `now`; `None` once expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let expires = self.fetched_at + self.ttl;
        expires.duration_since(now).ok().filter(|d| !d.is_zero())
    }

    /// How old it is at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fetched_at).unwrap_or_default()
    }
}

impl SealKey {
    /// The key of the values of the caller whose `authorization` value this is.
    pub fn for_token(secret: &CacheSecret, authorization: &[u8]) -> SealKey {
        SealKey::derive(
            secret,
            authorization,
            b"wnology-gateway shared cache: values v1",
        )
    }

    /// The key of the invalidation feed's messages.
    pub fn for_feed(secret: &CacheSecret) -> SealKey {
        SealKey::derive(secret, b"", b"wnology-gateway shared cache: feed v1")
    }

    fn derive(secret: &CacheSecret, salt: &[u8], info: &[u8]) -> SealKey {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(Some(salt), secret.bytes())
            .expand(info, key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        SealKey(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Seals `plaintext` bound to `aad`.
    pub fn seal_bytes(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut out = Vec::with_capacity(1 + NONCE + plaintext.len() + 16);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        let aad = [&[FORMAT_VERSION][..], aad].concat();
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SealKey::seal_bytes`] sealed under the same `aad`.
    pub fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError::Truncated)?;
        if version != FORMAT_VERSION {
            return Err(OpenError::Version);
        }
        if rest.len() < NONCE + 16 {
            return Err(OpenError::Truncated);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE);
        let aad = [&[FORMAT_VERSION][..], aad].concat();
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Forged)
    }

    /// Seals one entry stored under the Redis key `name`.
    pub fn seal(&self, name: &str, entry: &Entry) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::with_capacity(HEADER + entry.answer.len()));
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let fetched = entry
            .fetched_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        plain.extend_from_slice(&millis(fetched).to_be_bytes());
        plain.extend_from_slice(&millis(entry.ttl).to_be_bytes());
        plain.extend_from_slice(&entry.upstream_status.to_be_bytes());
        plain.extend_from_slice(&entry.answer);
        self.seal_bytes(name.as_bytes(), &plain)
    }

    /// Opens the entry stored under `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Entry, OpenError> {
        let plain = self.open_bytes(name.as_bytes(), sealed)?;
        if plain.len() < HEADER {
            return Err(OpenError::Truncated);
        }
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&plain[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Ok(Entry {
            fetched_at: UNIX_EPOCH + Duration::from_millis(u64_at(0)),
            ttl: Duration::from_millis(u64_at(8)),
            upstream_status: u16::from_be_bytes([plain[16], plain[17]]),
            answer: Bytes::copy_from_slice(&plain[HEADER..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> CacheSecret {
        CacheSecret::new(vec![byte; 48]).unwrap()
    }

    fn entry() -> Entry {
        Entry {
            answer: Bytes::from_static(b"the answer, in protobuf"),
            upstream_status: 200,
            fetched_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ttl: Duration::from_secs(30),
        }
    }

    #[test]
    fn round_trip_and_no_plaintext() {
        let key = SealKey::for_token(&secret(1), b"Bearer a");
        let sealed = key.seal("wg1:{s01}:v:aa", &entry());
        assert!(!sealed.windows(10).any(|w| w == b"the answer"));
        assert_eq!(key.open("wg1:{s01}:v:aa", &sealed), Ok(entry()));
    }

    #[test]
    fn another_key_token_secret_or_version_does_not_open() {
        let key = SealKey::for_token(&secret(1), b"Bearer a");
        let sealed = key.seal("name-a", &entry());
        assert_eq!(key.open("name-b", &sealed), Err(OpenError::Forged));
        let other_token = SealKey::for_token(&secret(1), b"Bearer b");
        assert_eq!(other_token.open("name-a", &sealed), Err(OpenError::Forged));
        let other_secret = SealKey::for_token(&secret(2), b"Bearer a");
        assert_eq!(other_secret.open("name-a", &sealed), Err(OpenError::Forged));
        let mut bumped = sealed.clone();
        bumped[0] = FORMAT_VERSION + 1;
        assert_eq!(key.open("name-a", &bumped), Err(OpenError::Version));
        assert_eq!(key.open("name-a", &sealed[..20]), Err(OpenError::Truncated));
        let mut flipped = sealed;
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("name-a", &flipped), Err(OpenError::Forged));
    }

    #[test]
    fn remaining_time_and_age() {
        let e = entry();
        let now = e.fetched_at + Duration::from_secs(10);
        assert_eq!(e.remaining(now), Some(Duration::from_secs(20)));
        assert_eq!(e.age(now), Duration::from_secs(10));
        assert_eq!(e.remaining(e.fetched_at + Duration::from_secs(31)), None);
    }
}

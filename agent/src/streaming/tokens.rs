//! Single-use tokens for streaming requests.
//!
//! The Exec, Attach and PortForward RPCs answer with a URL instead of a stream. The request
//! itself waits here under a random token that is part of that URL; the HTTP server takes it
//! out again when the client connects. A token works once and only for a minute, and only a
//! bounded number of requests may wait at a time: the same rules as the kubelet's streaming
//! server, so that a client that asks for URLs and never uses them cannot grow our memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How many requests may wait for their client at once.
pub const MAX_IN_FLIGHT: usize = 1000;
/// Characters in a token. With 64 symbols that is 48 random bits: unguessable within a minute.
const TOKEN_LEN: usize = 8;
/// The URL-safe base64 alphabet: tokens go into URL paths unescaped.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("maximum number of in-flight requests exceeded")]
    Full,
    #[error("no randomness for a token: {0}")]
    Random(getrandom::Error),
}

struct Entry<T> {
    request: T,
    expires: Instant,
}

/// Requests waiting for their client, by token.
pub struct RequestCache<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> RequestCache<T> {
    pub fn new() -> Self {
        Self::with_limits(TOKEN_TTL, MAX_IN_FLIGHT)
    }

    pub fn with_limits(ttl: Duration, capacity: usize) -> Self {
        RequestCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry<T>>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters here: at worst one entry more or less.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `request` and returns its new token.
    pub fn insert(&self, request: T) -> Result<String, TokenError> {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|_, entry| entry.expires > now);
        if entries.len() >= self.capacity {
            return Err(TokenError::Full);
        }
        let token = loop {
            let token = random_token()?;
            if !entries.contains_key(&token) {
                break token;
            }
        };
        entries.insert(
            token.clone(),
            Entry {
                request,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Takes the request of `token` out: `None` when the token is unknown, used or expired.
    pub fn consume(&self, token: &str) -> Option<T> {
        let entry = self.entries().remove(token)?;
        (entry.expires > Instant::now()).then_some(entry.request)
    }
}

impl<T> Default for RequestCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn random_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_LEN];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 63)] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let cache = RequestCache::new();
        let token = cache.insert("exec").unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(cache.consume(&token), Some("exec"));
        assert_eq!(cache.consume(&token), None);
        assert_eq!(cache.consume("unknown"), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_forgotten() {
        let cache = RequestCache::with_limits(Duration::ZERO, 1);
        let token = cache.insert(1).unwrap();
        assert_eq!(cache.consume(&token), None);
        // The expired entry does not count against the limit.
        cache.insert(2).unwrap();
        cache.insert(3).unwrap();
    }

    #[test]
    fn the_number_of_waiting_requests_is_bounded() {
        let cache = RequestCache::with_limits(TOKEN_TTL, 2);
        let first = cache.insert(1).unwrap();
        cache.insert(2).unwrap();
        assert!(matches!(cache.insert(3), Err(TokenError::Full)));
        cache.consume(&first);
        cache.insert(3).unwrap();
    }

    #[test]
    fn tokens_differ() {
        let cache = RequestCache::new();
        let a = cache.insert(()).unwrap();
        let b = cache.insert(()).unwrap();
        assert_ne!(a, b);
    }
}

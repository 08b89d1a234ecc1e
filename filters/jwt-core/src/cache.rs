//! A bounded cache of verified tokens, so a repeated token skips parsing and the signature check.
//!
//! Claims that depend on time or on the requirement (expiry, audiences) are checked again on every
//! hit, as Envoy's `jwt_cache_config` does; only the signature result and the parse are reused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::UnixSeconds;
use crate::token::Jwt;

/// Verified tokens, keyed by the whole token text (so no hash collision can alias two tokens),
/// evicted oldest-first when full and dropped once expired.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<String, Arc<Jwt>>,
    order: VecDeque<String>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A verified token, if cached and not expired beyond `skew`.
    pub fn get(&mut self, token: &str, now: UnixSeconds, skew: UnixSeconds) -> Option<Arc<Jwt>> {
        let jwt = self.entries.get(token)?;
        if jwt.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            self.entries.remove(token);
            return None;
        }
        Some(Arc::clone(jwt))
    }

    /// Remembers a token whose signature verified.
    pub fn insert(&mut self, jwt: Arc<Jwt>) {
        if self.capacity == 0 || self.entries.contains_key(jwt.raw()) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        // Expired entries leave `entries` early but stay in `order`; bound it too.
        if self.order.len() >= self.capacity.saturating_mul(2) {
            self.order.retain(|t| self.entries.contains_key(t));
        }
        self.order.push_back(jwt.raw().to_string());
        self.entries.insert(jwt.raw().to_string(), jwt);
    }

    /// Forgets everything (the keys changed).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::B64URL;
    use base64::Engine as _;

    fn jwt(n: u32, exp: u64) -> Arc<Jwt> {
        let header = B64URL.encode(r#"{"alg":"HS256"}"#);
        let payload = B64URL.encode(format!(r#"{{"n":{n},"exp":{exp}}}"#));
        Arc::new(Jwt::parse(&format!("{header}.{payload}.c2ln")).unwrap())
    }

    #[test]
    fn bounded_and_oldest_first() {
        let mut cache = TokenCache::new(2);
        let (a, b, c) = (jwt(1, 100), jwt(2, 100), jwt(3, 100));
        cache.insert(Arc::clone(&a));
        cache.insert(Arc::clone(&b));
        cache.insert(Arc::clone(&c));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(a.raw(), 0, 0).is_none());
        assert!(cache.get(b.raw(), 0, 0).is_some());
        assert!(cache.get(c.raw(), 0, 0).is_some());
    }

    #[test]
    fn honours_exp_with_skew() {
        let mut cache = TokenCache::new(10);
        let a = jwt(1, 100);
        cache.insert(Arc::clone(&a));
        assert!(cache.get(a.raw(), 160, 60).is_some());
        assert!(cache.get(a.raw(), 161, 60).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped on sight");
    }
}

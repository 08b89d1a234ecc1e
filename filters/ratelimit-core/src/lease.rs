//! Token leases: a worker takes several tokens from a shared bucket in one compare-and-swap and
//! hands them to its next requests without touching the shared store.
//!
//! Every shared-data read and write is a hostcall that takes Envoy's shared-data lock; with a
//! lease a busy key costs one round trip per [`LEASE_MAX`] requests instead of one per request.
//!
//! **Never over-admits.** A leased token was taken from the shared bucket, so the tokens all
//! workers hand out never exceed what the bucket gave. A lease is only good until the bucket's
//! next fill boundary (as seen when it was taken): a token given in one fill interval is never
//! spent in the next, so no interval admits more than the bucket held at its start. A denial
//! still happens exactly when the shared bucket is empty and the worker's own lease is spent.
//!
//! **Only busy keys lease, and only from plenty** ([`lease_size`]): a take is one token unless
//! the bucket has given at least 2 × [`LEASE_RAMP`] tokens since it was last full (across all
//! workers) and holds at least 2 × [`LEASE_SHARE`]; then a lease is a quarter of what it gave,
//! at most 1/[`LEASE_SHARE`] of what it holds and at most [`LEASE_MAX`]. Near empty, for any
//! bucket of fewer than 2 × [`LEASE_SHARE`] tokens, and for a key that comes a few times per
//! interval, every take is one token, exactly as without leases.
//!
//! **Under-admission is bounded.** Tokens a worker leased but did not spend before the fill
//! boundary are lost for that interval. Each worker holds at most one lease per key, so per key
//! and fill interval at most `workers × min(LEASE_MAX − 1, tokens / LEASE_SHARE)` tokens go
//! unused: with 4 workers, under 4 × 1/64 ≈ 6 % of the bucket and never more than 124 tokens.
//!
//! Only live leases are kept, for at most [`MAX_LEASE_KEYS`] keys ([`Leases::new`]) and
//! [`MAX_LEASE_KEY_BYTES`] of key text; when full, a new key takes one token at a time, so no
//! lease is ever dropped to make room.

use std::collections::HashMap;

use crate::Millis;
use crate::bucket::{Bucket, MIN_FILL_INTERVAL_MS, Taken};

/// The largest lease, in tokens.
pub const LEASE_MAX: u64 = 32;
/// A lease takes at most this fraction (1/n) of the tokens the bucket holds.
pub const LEASE_SHARE: u64 = 64;
/// A lease is at most 1/n of the tokens the bucket has given since it was last full: a key
/// must be busy within the interval before its takes grow.
pub const LEASE_RAMP: u64 = 4;
/// Keys a worker keeps a lease for at most: the busy keys leases are for fit, and many keys
/// that each come back rarely (which leases cannot help) never get one.
pub const MAX_LEASE_KEYS: usize = 1024;
/// Bytes of key text a worker keeps leases for, whatever the number of keys: keys are
/// untrusted and up to `max_value_bytes` per entry long.
pub const MAX_LEASE_KEY_BYTES: usize = 1 << 20;

/// Tokens to take from a bucket holding `available` (at least 1) that has given `used` since
/// it was last full, for a worker that may keep at most `cap`: at least 1, at most `cap`,
/// [`LEASE_MAX`], `used / LEASE_RAMP` and `available / LEASE_SHARE`.
pub fn lease_size(available: u64, used: u64, cap: u64) -> u64 {
    cap.min(used / LEASE_RAMP)
        .min(available / LEASE_SHARE)
        .clamp(1, LEASE_MAX)
}

/// A worker's lease on one key's bucket.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens left to hand out (at least 1 while kept).
    left: u64,
    /// The bucket's fill boundary after the take: the lease is void from then on.
    until_ms: Millis,
    /// The shared bucket's tokens right after the take (for the `remaining` reported).
    shared_after: u64,
    /// The parameters the lease was taken under.
    bucket: Bucket,
}

/// One worker's leases, by bucket key.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    entries: HashMap<String, Lease>,
    capacity: usize,
    key_bytes: usize,
    /// When the map was found full of live leases: no other scan before this.
    no_prune_until: Millis,
}

impl Leases {
    /// Leases for at most `capacity` keys at a time (0: none, every request asks the store).
    pub fn new(capacity: usize) -> Leases {
        Leases {
            entries: HashMap::new(),
            capacity,
            key_bytes: 0,
            no_prune_until: 0,
        }
    }

    /// Keys holding a lease.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key holds a lease.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn full(&self, key: &str) -> bool {
        self.entries.len() >= self.capacity
            || self.key_bytes.saturating_add(key.len()) > MAX_LEASE_KEY_BYTES
    }

    /// A token from `key`'s live lease under `bucket`; else `Err` with the most tokens the
    /// next take from the shared bucket may lease ([`LEASE_MAX`], or 1 when this worker has
    /// no room to keep a lease for `key`).
    pub fn take(&mut self, key: &str, bucket: &Bucket, now: Millis) -> Result<Taken, u64> {
        let Some(lease) = self.entries.get_mut(key) else {
            if self.capacity == 0 || (self.full(key) && !self.prune(key, now)) {
                return Err(1);
            }
            return Err(LEASE_MAX);
        };
        if now >= lease.until_ms || lease.bucket != *bucket {
            // Void: its tokens are given up (the documented under-admission).
            lease.left = 0;
            return Err(LEASE_MAX);
        }
        lease.left -= 1;
        let remaining = lease.shared_after.saturating_add(lease.left);
        let taken = Taken {
            allowed: true,
            remaining,
            next_fill_ms: if remaining >= bucket.max_tokens {
                0
            } else {
                lease.until_ms - now
            },
        };
        if lease.left == 0 {
            self.remove(key);
        }
        Ok(taken)
    }

    /// Makes room for `key` by dropping spent and void leases; whether there is room now. Scans
    /// at most once per [`MIN_FILL_INTERVAL_MS`] when the map is full of live leases.
    fn prune(&mut self, key: &str, now: Millis) -> bool {
        if now < self.no_prune_until {
            return false;
        }
        self.entries.retain(|_, l| l.left > 0 && now < l.until_ms);
        self.key_bytes = self.entries.keys().map(String::len).sum();
        if self.full(key) {
            self.no_prune_until = now.saturating_add(MIN_FILL_INTERVAL_MS);
            return false;
        }
        true
    }

    fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.key_bytes = self.key_bytes.saturating_sub(key.len());
        }
    }

    /// Records a take from the shared bucket that gave `granted` tokens (one for this request,
    /// the rest leased) and left it as `taken` says; returns what this request reports, the
    /// leased tokens counted as remaining. More than one token is only ever granted when
    /// [`Leases::take`] said there is room to keep them.
    pub fn record(
        &mut self,
        key: &str,
        bucket: &Bucket,
        now: Millis,
        granted: u64,
        taken: Taken,
    ) -> Taken {
        if granted <= 1 {
            self.remove(key);
            return taken;
        }
        let lease = Lease {
            left: granted - 1,
            until_ms: now.saturating_add(taken.next_fill_ms),
            shared_after: taken.remaining,
            bucket: *bucket,
        };
        match self.entries.get_mut(key) {
            Some(existing) => *existing = lease,
            None => {
                self.key_bytes += key.len();
                self.entries.insert(key.to_string(), lease);
            }
        }
        Taken {
            remaining: taken.remaining.saturating_add(granted - 1),
            ..taken
        }
    }
}

#[cfg(test)]
mod tests;

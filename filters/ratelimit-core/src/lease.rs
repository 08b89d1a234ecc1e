//! Token leases: a worker takes several tokens from a shared bucket in one compare-and-swap and
//! hands them to its next requests without touching the shared store.
//!
//! Every shared-data read and write is a hostcall that takes Envoy's shared-data lock; with a
//! lease a busy key costs one round trip per [`LEASE_MAX`] requests instead of one per request.
//!
//! **Never over-admits.** A leased token was taken from the shared bucket, so the tokens all
//! workers hand out never exceed what the bucket gave. A lease is only good until the bucket's
//! next fill boundary (as seen when it was taken): a token given in one fill interval is never
//! spent in the next, so no interval admits more than the bucket held at its start plus what it
//! would have admitted anyway. A denial still happens exactly when the shared bucket is empty
//! and the worker's own lease is spent.
//!
//! **Under-admission is bounded.** Tokens a worker leased but did not spend before the fill
//! boundary are lost for that interval. A lease is at most [`LEASE_MAX`] tokens and at most
//! 1/[`LEASE_SHARE`] of what the bucket held when it was taken (so near empty, and for any
//! bucket of fewer than 2 × [`LEASE_SHARE`] tokens, every take is one token, exactly as without
//! leases), and each worker holds at most one lease per key. Per key and fill interval at most
//! `workers × min(LEASE_MAX − 1, tokens / LEASE_SHARE)` tokens go unused: with 4 workers, under
//! 4 × 1/64 ≈ 6 % of the bucket and never more than 124 tokens.
//!
//! Lease sizes adapt: a key's first take is one token; each time a worker spends its lease on a
//! key within the interval it doubles the next one (up to [`LEASE_MAX`]), and halves it when a
//! lease expired unspent. A key seen once per eviction cycle never leases more than one token.
//! The map is bounded in keys ([`Leases::new`]) and in key bytes ([`MAX_LEASE_KEY_BYTES`]); when
//! it is full a new key takes one token at a time,
//! so no lease is ever dropped to make room.

use std::collections::HashMap;

use crate::Millis;
use crate::bucket::{Bucket, MIN_FILL_INTERVAL_MS, Taken};

/// The largest lease, in tokens.
pub const LEASE_MAX: u64 = 32;
/// A lease takes at most this fraction (1/n) of the tokens the bucket holds.
pub const LEASE_SHARE: u64 = 64;
/// Bytes of key text a worker keeps lease state for, whatever the number of keys: keys are
/// untrusted and up to `max_value_bytes` per entry long.
pub const MAX_LEASE_KEY_BYTES: usize = 1 << 20;

/// Tokens to take from a bucket holding `available` (at least 1) for a lease of `want`: at
/// least 1, at most `want`, [`LEASE_MAX`] and `available / LEASE_SHARE`.
pub fn lease_size(available: u64, want: u64) -> u64 {
    want.min(available / LEASE_SHARE).clamp(1, LEASE_MAX)
}

/// A worker's lease on one key's bucket.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens left to hand out.
    left: u64,
    /// The bucket's fill boundary after the take: the lease is void from then on.
    until_ms: Millis,
    /// The shared bucket's tokens right after the take (for the `remaining` reported).
    shared_after: u64,
    /// The parameters the lease was taken under.
    bucket: Bucket,
    /// Tokens to ask for at the next take.
    next: u64,
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
    /// Lease state for at most `capacity` keys (0: no leases, every request asks the store).
    pub fn new(capacity: usize) -> Leases {
        Leases {
            entries: HashMap::new(),
            capacity,
            key_bytes: 0,
            no_prune_until: 0,
        }
    }

    fn full(&self, key: &str) -> bool {
        self.entries.len() >= self.capacity
            || self.key_bytes.saturating_add(key.len()) > MAX_LEASE_KEY_BYTES
    }

    /// Keys with lease state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has lease state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A token from `key`'s live lease under `bucket`, if it has one with tokens left.
    pub fn take(&mut self, key: &str, bucket: &Bucket, now: Millis) -> Option<Taken> {
        let lease = self.entries.get_mut(key)?;
        if lease.left == 0 || now >= lease.until_ms || lease.bucket != *bucket {
            return None;
        }
        lease.left -= 1;
        let remaining = lease.shared_after.saturating_add(lease.left);
        Some(Taken {
            allowed: true,
            remaining,
            next_fill_ms: if remaining >= bucket.max_tokens {
                0
            } else {
                lease.until_ms - now
            },
        })
    }

    /// Tokens to ask the shared bucket for on `key`'s next take.
    pub fn want(&mut self, key: &str, now: Millis) -> u64 {
        match self.entries.get_mut(key) {
            Some(lease) => {
                if lease.left > 0 && now >= lease.until_ms {
                    // Expired unspent: demand is below the lease size.
                    lease.next = (lease.next / 2).max(1);
                } else if lease.left == 0 {
                    lease.next = lease.next.saturating_mul(2).min(LEASE_MAX);
                }
                lease.left = 0;
                lease.next
            }
            None => 1,
        }
    }

    /// Records a take from the shared bucket that gave `granted` tokens (one for this request,
    /// the rest leased) and left it as `taken` says; returns what this request reports, the
    /// leased tokens counted as remaining. Nothing is kept when the map is full and the key is
    /// new (it was then given one token: see [`Leases::want`]).
    pub fn record(
        &mut self,
        key: &str,
        bucket: &Bucket,
        now: Millis,
        granted: u64,
        taken: Taken,
    ) -> Taken {
        if self.capacity == 0 || granted == 0 {
            return taken;
        }
        let left = granted - 1;
        let until_ms = now.saturating_add(taken.next_fill_ms);
        let lease = Lease {
            left,
            until_ms,
            shared_after: taken.remaining,
            bucket: *bucket,
            next: 1,
        };
        match self.entries.get_mut(key) {
            Some(existing) => {
                *existing = Lease {
                    next: existing.next,
                    ..lease
                };
            }
            None => {
                if self.full(key) && now >= self.no_prune_until {
                    // Only state without tokens goes: a lease with tokens left is never dropped.
                    self.entries.retain(|_, l| l.left > 0 && now < l.until_ms);
                    self.key_bytes = self.entries.keys().map(String::len).sum();
                    if self.full(key) {
                        // Full of live leases: scan again at most once per shortest interval.
                        self.no_prune_until = now.saturating_add(MIN_FILL_INTERVAL_MS);
                    }
                }
                if !self.full(key) {
                    self.key_bytes += key.len();
                    self.entries.insert(key.to_string(), lease);
                }
            }
        }
        Taken {
            remaining: taken.remaining.saturating_add(left),
            ..taken
        }
    }
}

#[cfg(test)]
mod tests;

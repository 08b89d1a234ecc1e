//! Buckets in the host's shared store: a fixed table of slots, compare-and-swap updates.
//!
//! Every Envoy worker runs its own VM, so a bucket must live in proxy-wasm shared data and be
//! updated with compare-and-swap: read (value, cas), compute, write back only if nobody wrote
//! in between, else retry. That makes a bucket of N admit exactly N across all workers.
//!
//! Shared data cannot be deleted, so keys are not stored under their own names (a per-client key
//! space would grow without end): a key hashes into a fixed table of slots and probes [`PROBES`]
//! of them. The limiter sizes the table at twice `max_keys`, so `max_keys` live keys fit with
//! the table half full (a key then finds no slot with probability about 2^-16).
//!
//! A slot holds one fixed-size record of [`RECORD_LEN`] bytes: magic and format version,
//! the owner (a fingerprint of the descriptor's definition and a salted 128-bit digest of the
//! key — never the key itself, so a slot costs the same for a 5-byte key and a 50 KB one), the
//! bucket's parameters and its state. Bytes that are not such a record, or whose numbers this
//! crate could not have written, are treated as an empty slot: never trusted, overwritten.
//!
//! **Eviction rule**: a slot may be taken over when its bucket has refilled to full — a full
//! bucket owes nothing, so handing its key a fresh full bucket later gives nobody extra tokens —
//! or, when every probed slot is live, when its bucket has given at most [`RECLAIM_SLACK`]
//! tokens and is not empty (the least used such bucket goes first). So a burst of one-request
//! keys cannot pin the table for a fill interval, while an empty bucket, or one that gave more,
//! is never taken over: flooding the table with new keys cannot reset a limited key. When no
//! probed slot can be taken over, the key gets the configured overflow behaviour. The rule holds
//! for records of any owner, including buckets of an earlier configuration.
//!
//! **One record per key**: a key's own record is looked for among all its probes before a slot
//! is claimed. Two workers may still claim two slots for one new key at the same moment; each
//! looks again after claiming, and whichever wrote last sees both records and merges them into
//! the first in probe order (the other's tokens are charged to it and its slot released). When
//! the first cannot pay in full (workers whose clocks straddle a refill each judged a different
//! slot claimable, and each gave the key's last token), the merging worker refuses its own
//! request, which pays one token: with two workers claiming at once the key admits no more than
//! its bucket. What stays unpaid beyond that is over-admitted: a token per further worker
//! claiming for the same new key within the same microseconds, and what other workers drew from
//! the kept bucket between this worker's claim and its merge beyond what it held.

// The store is the one every filter core shares; re-exported where the table's callers look.
pub use meshgate_filter_common::store::{SetError, SharedStore};
use sha2::{Digest, Sha256};

use crate::Millis;
use crate::bucket::{Bucket, MAX_FILL_INTERVAL_MS, MIN_FILL_INTERVAL_MS, State, Taken};

/// Slots probed per key.
pub const PROBES: u64 = 16;
/// Compare-and-swap attempts per slot before giving up.
pub const CAS_ATTEMPTS: u32 = 64;
/// Tokens a live bucket may have given and still be reclaimed by a new key that finds every
/// probed slot live: a burst of one-request keys then cannot pin the table for a fill
/// interval. Each reclaim hands the reclaimed key, when it comes back, at most this many
/// tokens more than its quota; a bucket that gave more, or is empty, is never reclaimed.
pub const RECLAIM_SLACK: u64 = 1;
/// The CAS a write of a new slot claims; the host compares it with the CAS of an existing entry,
/// so the write succeeds only if nobody created the slot first (CAS values count up from 1 and
/// never reach this one in practice).
pub const CREATE_CAS: u32 = u32::MAX;

/// What taking from a key's bucket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The key's bucket answered.
    Taken(Taken),
    /// Every probed slot holds another key's bucket that is not full and cannot be reclaimed.
    Overflow,
    /// The key found no slot and took from the shared overflow bucket instead.
    OverflowTaken(Taken),
    /// The store kept refusing.
    StoreError,
}

impl Take {
    /// Marks a take from the overflow bucket as such.
    pub fn into_overflow(self) -> Take {
        match self {
            Take::Taken(t) => Take::OverflowTaken(t),
            other => other,
        }
    }
}

/// A table of slots under one prefix in the shared store.
#[derive(Debug, Clone)]
pub struct Table {
    prefix: String,
    slots: u64,
    salt: Salt,
}

/// A secret shared by every worker of one Envoy, mixed into key digests so that nobody who does
/// not know it can choose keys that collide or that land on chosen slots.
pub type Salt = [u8; 16];

/// Whose bucket a record holds: the descriptor (a fingerprint of its definition, so a record
/// of a descriptor that was changed or removed belongs to nobody current) and the key (a
/// salted digest: fixed size whatever the key's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Fingerprint of the descriptor's definition ([`fingerprint`]).
    pub fingerprint: u64,
    /// SHA-256 of salt, fingerprint and key, cut to 128 bits.
    pub digest: [u8; 16],
}

/// The 64-bit fingerprint of a definition's canonical text (the first 8 bytes of its SHA-256).
pub fn fingerprint(text: &str) -> u64 {
    let hash = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// Marks a record of this crate, so bytes of anything else are never read as a bucket.
pub const RECORD_MAGIC: [u8; 4] = *b"MGRL";
/// The record layout's version: a record of another version is treated as an empty slot.
pub const RECORD_VERSION: u8 = 1;
/// Bytes of every record: magic 4, version 1, padding 3, fingerprint 8, digest 16, five u64.
pub const RECORD_LEN: usize = 72;

/// A slot's record: who owns it, the bucket's parameters and its state. Fixed size, so a slot
/// costs the same whatever the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) owner: Owner,
    pub(crate) bucket: Bucket,
    pub(crate) state: State,
}

/// How far ahead of a worker's clock a bucket's last fill may be before it is taken as a step
/// of the clock rather than a stale reading: far longer than a worker is ever held up between
/// reading the clock and the shared data.
const MAX_CLOCK_LEAD_MS: Millis = 60_000;

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..4].copy_from_slice(&RECORD_MAGIC);
        out[4] = RECORD_VERSION;
        out[8..16].copy_from_slice(&self.owner.fingerprint.to_le_bytes());
        out[16..32].copy_from_slice(&self.owner.digest);
        let numbers = [
            self.state.tokens,
            self.state.last_fill_ms,
            self.bucket.max_tokens,
            self.bucket.tokens_per_fill,
            self.bucket.fill_interval_ms,
        ];
        for (i, n) in numbers.iter().enumerate() {
            out[32 + i * 8..40 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// The record in `bytes`, or `None` unless they are exactly a record of this version with
    /// parameters this crate could have written (a bucket never holds more than its capacity,
    /// never fills faster than [`MIN_FILL_INTERVAL_MS`]).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        if bytes[..4] != RECORD_MAGIC || bytes[4] != RECORD_VERSION || bytes[5..8] != [0; 3] {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&bytes[16..32]);
        let record = Record {
            owner: Owner {
                fingerprint: u64_at(8),
                digest,
            },
            state: State {
                tokens: u64_at(32),
                last_fill_ms: u64_at(40),
            },
            bucket: Bucket {
                max_tokens: u64_at(48),
                tokens_per_fill: u64_at(56),
                fill_interval_ms: u64_at(64),
            },
        };
        let b = &record.bucket;
        let sane = b.max_tokens >= 1
            && b.tokens_per_fill >= 1
            && (MIN_FILL_INTERVAL_MS..=MAX_FILL_INTERVAL_MS).contains(&b.fill_interval_ms)
            && record.state.tokens <= b.max_tokens;
        sane.then_some(record)
    }

    /// The record as of `now`. A last fill ahead of `now` is kept as it is (no refill until the
    /// clock reaches it): a worker whose reading of the clock is stale must not move a bucket's
    /// fill time back, or the next worker would refill intervals already given. Only a lead
    /// longer than an interval and than [`MAX_CLOCK_LEAD_MS`] (the clock stepped back) is
    /// taken as `now`, its tokens kept: left as it is the bucket would not refill for as long
    /// as the step; taken as a free slot it would be a full bucket again.
    fn at(mut self, now: Millis) -> Record {
        let lead = self.state.last_fill_ms.saturating_sub(now);
        if lead > self.bucket.fill_interval_ms && lead > MAX_CLOCK_LEAD_MS {
            self.state.last_fill_ms = now;
        }
        self
    }
}

impl Table {
    /// A table of `slots` slots whose shared-data keys start with `prefix`, keys digested with
    /// `salt`.
    pub fn new(prefix: impl Into<String>, slots: u32, salt: Salt) -> Table {
        Table {
            prefix: prefix.into(),
            slots: u64::from(slots.max(1)),
            salt,
        }
    }

    /// The owner of `key`'s bucket for the descriptor with `fingerprint`.
    pub fn owner(&self, fingerprint: u64, key: &str) -> Owner {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(fingerprint.to_le_bytes());
        hasher.update(key.as_bytes());
        let hash = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hash[..16]);
        Owner {
            fingerprint,
            digest,
        }
    }

    fn slot_key(&self, index: u64) -> String {
        format!("{}{}", self.prefix, index % self.slots)
    }

    /// The shared-data keys of the slots `owner` probes, in probe order.
    fn probe_slots(&self, owner: &Owner) -> Vec<String> {
        // The digest is salted, so the home slot is as unpredictable as the digest.
        let mut home = [0u8; 8];
        home.copy_from_slice(&owner.digest[8..]);
        let home = u64::from_le_bytes(home);
        (0..PROBES.min(self.slots))
            .map(|probe| self.slot_key(home.wrapping_add(probe)))
            .collect()
    }

    /// Takes a token from `owner`'s bucket (created full on first use).
    ///
    /// The key's own record is looked for in every probed slot before any slot is claimed, so
    /// a record at a later probe is found even when an earlier slot is free or full (else the
    /// key would get a fresh bucket as soon as an earlier slot refilled). Only when the key has
    /// no record does it claim a slot: the first free or full one, else the least used live
    /// bucket that has given at most [`RECLAIM_SLACK`] tokens and is not empty.
    pub fn take(
        &self,
        store: &dyn SharedStore,
        owner: Owner,
        bucket: &Bucket,
        now: Millis,
    ) -> Take {
        self.take_up_to(store, owner, bucket, now, 1).0
    }

    /// [`Table::take`], taking up to `want` tokens in the same write when the bucket holds
    /// plenty ([`crate::lease::lease_size`]), for a worker's [`crate::lease::Leases`]: the
    /// tokens taken come second (0 when refused).
    pub fn take_up_to(
        &self,
        store: &dyn SharedStore,
        owner: Owner,
        bucket: &Bucket,
        now: Millis,
        want: u64,
    ) -> (Take, u64) {
        let slots = self.probe_slots(&owner);
        for _ in 0..CAS_ATTEMPTS {
            let mut seen = Vec::with_capacity(slots.len());
            let mut own = None;
            for (i, slot) in slots.iter().enumerate() {
                let (record, cas) = read(store, slot, now);
                match record {
                    Some(r) if r.owner == owner => {
                        own = Some((i, r, cas));
                        break;
                    }
                    record => seen.push((record, cas)),
                }
            }
            if let Some((i, record, cas)) = own {
                match take_own(store, &slots[i], owner, bucket, now, want, (record, cas)) {
                    Own::Taken(t, granted) => return (Take::Taken(t), granted),
                    // Reclaimed or merged away since we read it: look again.
                    Own::Moved => continue,
                    Own::Failed => return (Take::StoreError, 0),
                }
            }
            let Some(claim) = claimable(&seen, now) else {
                return (Take::Overflow, 0);
            };
            let (state, taken, granted) = bucket.take_up_to(bucket.fresh(now), now, want);
            let record = Record {
                owner,
                bucket: *bucket,
                state,
            };
            // The CAS read above: the slot is overwritten only in the state it was judged in,
            // so a bucket that gave more tokens meanwhile is never reclaimed.
            match store.set(&slots[claim], &record.encode(), Some(seen[claim].1)) {
                Ok(()) => {}
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return (Take::StoreError, 0),
            }
            // Another worker may have claimed another slot for the same key at the same time;
            // whichever of them writes last sees both records and merges them. When the kept
            // bucket cannot pay for what the released one gave, both admitted a request the
            // bucket did not hold: this one is refused instead, which pays one token back.
            return match merge(store, &slots, owner, now) {
                Ok(Merged { unpaid: 0, kept }) => {
                    // Report the bucket the key kept, not the one this worker had claimed.
                    let remaining = kept.map_or(taken.remaining, |k| k.min(taken.remaining));
                    (Take::Taken(Taken { remaining, ..taken }), granted)
                }
                Ok(_) => (
                    Take::Taken(Taken {
                        allowed: false,
                        remaining: 0,
                        ..taken
                    }),
                    0,
                ),
                Err(()) => (Take::StoreError, 0),
            };
        }
        (Take::StoreError, 0)
    }

    /// Takes a token from `owner`'s bucket in the fixed slot `slot` (outside the table: for
    /// buckets with a key of their own, such as the default and overflow buckets).
    pub fn take_in(
        &self,
        store: &dyn SharedStore,
        slot: &str,
        owner: Owner,
        bucket: &Bucket,
        now: Millis,
    ) -> Take {
        self.take_in_up_to(store, slot, owner, bucket, now, 1).0
    }

    /// [`Table::take_in`], taking up to `want` tokens as [`Table::take_up_to`] does.
    pub fn take_in_up_to(
        &self,
        store: &dyn SharedStore,
        slot: &str,
        owner: Owner,
        bucket: &Bucket,
        now: Millis,
        want: u64,
    ) -> (Take, u64) {
        match take_in_slot(store, slot, owner, bucket, now, want) {
            SlotResult::Taken(t, granted) => (Take::Taken(t), granted),
            // A fixed slot held by a live bucket of another owner (a filter of another
            // configuration under the same name): no room, as in the table.
            SlotResult::Occupied => (Take::Overflow, 0),
            SlotResult::Failed => (Take::StoreError, 0),
        }
    }
}

fn take_in_slot(
    store: &dyn SharedStore,
    slot: &str,
    owner: Owner,
    bucket: &Bucket,
    now: Millis,
    want: u64,
) -> SlotResult {
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = match store.get(slot) {
            None => (None, CREATE_CAS),
            Some((bytes, cas)) => (Record::decode(&bytes).map(|r| r.at(now)), cas),
        };
        let state = match current {
            // Our key: its bucket, refilled.
            Some(r) if r.owner == owner => state_for(&r, bucket),
            // Another owner whose bucket is not full: this slot is taken.
            Some(r) if !r.bucket.is_full(r.state, now) => return SlotResult::Occupied,
            // Free, full (evictable) or unreadable: a fresh bucket for our key.
            _ => bucket.fresh(now),
        };
        match take_and_write(store, slot, owner, bucket, state, now, cas, want) {
            Ok((taken, granted)) => return SlotResult::Taken(taken, granted),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return SlotResult::Failed,
        }
    }
    SlotResult::Failed
}

/// `record`'s state under `bucket`: as it is, or, when the bucket's parameters changed, what
/// was used kept within the new capacity.
fn state_for(record: &Record, bucket: &Bucket) -> State {
    if record.bucket == *bucket {
        record.state
    } else {
        State {
            tokens: record.state.tokens.min(bucket.max_tokens),
            last_fill_ms: record.state.last_fill_ms,
        }
    }
}

/// Takes up to `want` tokens from `bucket` at `state` and writes `owner`'s record back, if the
/// slot still holds what was read with `cas`.
#[allow(clippy::too_many_arguments)]
fn take_and_write(
    store: &dyn SharedStore,
    slot: &str,
    owner: Owner,
    bucket: &Bucket,
    state: State,
    now: Millis,
    cas: u32,
    want: u64,
) -> Result<(Taken, u64), SetError> {
    let (next, taken, granted) = bucket.take_up_to(state, now, want);
    let record = Record {
        owner,
        bucket: *bucket,
        state: next,
    };
    store
        .set(slot, &record.encode(), Some(cas))
        .map(|()| (taken, granted))
}

/// A slot's current record (a record this crate could have written whose clock makes sense) and
/// the CAS to write it back with.
fn read(store: &dyn SharedStore, slot: &str, now: Millis) -> (Option<Record>, u32) {
    match store.get(slot) {
        None => (None, CREATE_CAS),
        Some((bytes, cas)) => (Record::decode(&bytes).map(|r| r.at(now)), cas),
    }
}

/// Tokens `record`'s bucket has given since it was last full, as of `now`.
fn used(record: &Record, now: Millis) -> u64 {
    let b = &record.bucket;
    b.max_tokens - b.refill(record.state, now).tokens.min(b.max_tokens)
}

/// The probe to claim for a key that has no record: the first free, unreadable or full slot;
/// else the live bucket that has given the fewest tokens, if at most [`RECLAIM_SLACK`] and it
/// still has one (an empty bucket is never reclaimed, so a flood cannot reset a limited key).
fn claimable(seen: &[(Option<Record>, u32)], now: Millis) -> Option<usize> {
    let free = seen.iter().position(|(record, _)| {
        record
            .as_ref()
            .is_none_or(|r| r.bucket.is_full(r.state, now))
    });
    free.or_else(|| {
        seen.iter()
            .enumerate()
            .filter_map(|(i, (record, _))| record.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| {
                used(r, now) <= RECLAIM_SLACK && r.bucket.refill(r.state, now).tokens > 0
            })
            .min_by_key(|(i, r)| (used(r, now), *i))
            .map(|(i, _)| i)
    })
}

/// The owner of released slots: nobody's key has this digest (2^-128).
const NOBODY: Owner = Owner {
    fingerprint: 0,
    digest: [0; 16],
};

/// Leaves `owner` one record among its probes: the tokens given by every record after the
/// first (in probe order) are charged to the first, and their slots released (a full
/// bucket of nobody, free for any key).
fn merge(
    store: &dyn SharedStore,
    slots: &[String],
    owner: Owner,
    now: Millis,
) -> Result<Merged, ()> {
    let mut merged = Merged::default();
    let mut first: Option<&str> = None;
    for slot in slots {
        let (record, _) = read(store, slot, now);
        if !record.is_some_and(|r| r.owner == owner) {
            continue;
        }
        let Some(keep) = first else {
            first = Some(slot);
            continue;
        };
        let given = release(store, slot, owner, now)?;
        if given > 0 {
            let (unpaid, left) = charge(store, keep, owner, given, now)?;
            merged.unpaid = merged.unpaid.saturating_add(unpaid);
            merged.kept = left.or(merged.kept);
        }
    }
    Ok(merged)
}

/// What a merge came to.
#[derive(Debug, Default)]
struct Merged {
    /// Tokens the kept record could not pay (it had fewer left): given beyond the bucket.
    unpaid: u64,
    /// Tokens the kept record holds after the last charge, when anything was charged.
    kept: Option<u64>,
}

/// Frees `slot` if it still holds `owner`'s record; the tokens that record had given.
fn release(store: &dyn SharedStore, slot: &str, owner: Owner, now: Millis) -> Result<u64, ()> {
    for _ in 0..CAS_ATTEMPTS {
        let (record, cas) = read(store, slot, now);
        let Some(record) = record.filter(|r| r.owner == owner) else {
            return Ok(0);
        };
        let freed = Record {
            owner: NOBODY,
            bucket: record.bucket,
            state: record.bucket.fresh(now),
        };
        match store.set(slot, &freed.encode(), Some(cas)) {
            Ok(()) => return Ok(used(&record, now)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Err(()),
        }
    }
    Err(())
}

/// Takes `tokens` from `owner`'s record in `slot` (down to empty); returns those it did not
/// hold and the tokens it holds after (none when the record is gone).
fn charge(
    store: &dyn SharedStore,
    slot: &str,
    owner: Owner,
    tokens: u64,
    now: Millis,
) -> Result<(u64, Option<u64>), ()> {
    for _ in 0..CAS_ATTEMPTS {
        let (record, cas) = read(store, slot, now);
        // Gone: it refilled to full and was taken over, so what it owed is paid.
        let Some(mut record) = record.filter(|r| r.owner == owner) else {
            return Ok((0, None));
        };
        let mut state = record.bucket.refill(record.state, now);
        let unpaid = tokens.saturating_sub(state.tokens);
        state.tokens = state.tokens.saturating_sub(tokens);
        record.state = state;
        match store.set(slot, &record.encode(), Some(cas)) {
            Ok(()) => return Ok((unpaid, Some(state.tokens))),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Err(()),
        }
    }
    Err(())
}

/// Takes a token from `owner`'s record in `slot`, which a scan found there.
fn take_own(
    store: &dyn SharedStore,
    slot: &str,
    owner: Owner,
    bucket: &Bucket,
    now: Millis,
    want: u64,
    read_before: (Record, u32),
) -> Own {
    // The probe's read serves the first attempt (the write's CAS still refuses a slot changed
    // since); the slot is read again only after a write lost.
    let mut current = Some(read_before);
    for _ in 0..CAS_ATTEMPTS {
        let (record, cas) = match current.take() {
            Some((record, cas)) => (Some(record), cas),
            None => read(store, slot, now),
        };
        let Some(r) = record.filter(|r| r.owner == owner) else {
            return Own::Moved;
        };
        let state = state_for(&r, bucket);
        match take_and_write(store, slot, owner, bucket, state, now, cas, want) {
            Ok((taken, granted)) => return Own::Taken(taken, granted),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Own::Failed,
        }
    }
    Own::Failed
}

enum Own {
    Taken(Taken, u64),
    Moved,
    Failed,
}

enum SlotResult {
    Taken(Taken, u64),
    Occupied,
    Failed,
}

/// The shared-data key of the [`Salt`] of every table under the same `vm_id`.
pub const SALT_KEY: &str = "meshgate.rl.salt";
const SALT_MAGIC: [u8; 4] = *b"MGRS";

/// The salt every worker uses: the one in the store, or `fresh()` written there first (the
/// first worker to write wins; the others read its salt). `None` when the store keeps failing.
/// A value under [`SALT_KEY`] that is not a salt is replaced.
pub fn load_or_create_salt(store: &dyn SharedStore, fresh: impl Fn() -> Salt) -> Option<Salt> {
    for _ in 0..CAS_ATTEMPTS {
        let cas = match store.get(SALT_KEY) {
            Some((bytes, cas)) => match decode_salt(&bytes) {
                Some(salt) => return Some(salt),
                None => cas,
            },
            None => CREATE_CAS,
        };
        let mut record = [0u8; 20];
        record[..4].copy_from_slice(&SALT_MAGIC);
        record[4..].copy_from_slice(&fresh());
        match store.set(SALT_KEY, &record, Some(cas)) {
            Ok(()) | Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return None,
        }
    }
    None
}

fn decode_salt(bytes: &[u8]) -> Option<Salt> {
    let bytes: &[u8; 20] = bytes.try_into().ok()?;
    if bytes[..4] != SALT_MAGIC {
        return None;
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[4..]);
    Some(salt)
}

#[cfg(test)]
mod tests;

//! The life of a remote JWKS: when to fetch, what to serve meanwhile, how to back off.
//!
//! The host does the fetching (`dispatch_http_call` in Envoy); this state machine only decides.
//! Times are milliseconds on the host's clock, so tests drive it with a fake one.

use std::sync::Arc;
use std::time::Duration;

use crate::jwks::KeySet;
use crate::provider::RemoteJwks;

/// At most one refetch for an unknown `kid` in this window, so a stream of tokens with made-up
/// key ids cannot turn the filter into a JWKS-endpoint flooder.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// What a request can expect from a provider's remote keys right now.
#[derive(Debug, Clone)]
pub enum Availability {
    /// Keys are at hand (perhaps stale while a refresh runs).
    Ready(Arc<KeySet>),
    /// No keys yet, a fetch is running or due: wait for it.
    Pending,
    /// No keys, and the last fetch failed; the next attempt is not due yet.
    Failed,
}

/// Fetch state of one provider's remote JWKS in one worker.
#[derive(Debug, Default, Clone)]
pub struct RemoteState {
    keys: Option<Arc<KeySet>>,
    fetched_at_ms: Option<u64>,
    in_flight: bool,
    consecutive_failures: u32,
    next_attempt_ms: u64,
    last_error: Option<String>,
    last_unknown_kid_refetch_ms: Option<u64>,
    refetch_requested: bool,
}

impl RemoteState {
    /// What a request can use now.
    ///
    /// As Envoy's `jwt_authn`: without `async_fetch`, keys older than `cache_duration` are
    /// expired and never used; the request waits for a refetch and is refused if it fails (or,
    /// during the back-off after a failure, at once). With `async_fetch`, Envoy keeps serving
    /// the last good keys while its refetches fail, and so does this.
    pub fn availability(&self, config: &RemoteJwks, now_ms: u64) -> Availability {
        match &self.keys {
            Some(keys) if config.fetch_at_start || !self.expired(config, now_ms) => {
                Availability::Ready(Arc::clone(keys))
            }
            _ if self.in_flight || self.should_fetch(config, now_ms) => Availability::Pending,
            _ => Availability::Failed,
        }
    }

    /// Whether the keys held were fetched `cache_duration` ago or longer.
    fn expired(&self, config: &RemoteJwks, now_ms: u64) -> bool {
        self.fetched_at_ms
            .is_none_or(|at| now_ms >= at.saturating_add(millis(config.cache_duration)))
    }

    /// Whether a fetch should start now: none running, back-off over, and no keys or stale keys.
    pub fn should_fetch(&self, config: &RemoteJwks, now_ms: u64) -> bool {
        if self.in_flight || now_ms < self.next_attempt_ms {
            return false;
        }
        match self.fetched_at_ms {
            _ if self.refetch_requested => true,
            None => true,
            Some(at) => now_ms >= at.saturating_add(millis(config.cache_duration)),
        }
    }

    /// Whether a token with an unknown `kid` may trigger a refetch now; records it if so.
    pub fn allow_unknown_kid_refetch(&mut self, now_ms: u64) -> bool {
        if self.in_flight {
            return true; // a fetch is already coming; waiting for it costs nothing extra
        }
        let window = millis(UNKNOWN_KID_REFETCH_INTERVAL);
        match self.last_unknown_kid_refetch_ms {
            Some(at) if now_ms < at.saturating_add(window) => false,
            _ => {
                self.last_unknown_kid_refetch_ms = Some(now_ms);
                self.next_attempt_ms = 0;
                self.refetch_requested = true;
                true
            }
        }
    }

    /// Marks a fetch as started.
    pub fn fetch_started(&mut self) {
        self.in_flight = true;
    }

    /// Whether a fetch is running.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Installs freshly fetched keys (from this worker's fetch or another's, via shared data).
    pub fn install(&mut self, keys: Arc<KeySet>, fetched_at_ms: u64) {
        self.keys = Some(keys);
        self.fetched_at_ms = Some(fetched_at_ms);
        self.in_flight = false;
        self.consecutive_failures = 0;
        self.next_attempt_ms = 0;
        self.last_error = None;
        self.refetch_requested = false;
    }

    /// Records a failed fetch and schedules the next attempt: exponential back-off within the
    /// retry budget, then `failed_refetch`. Keys already held keep being served.
    pub fn fetch_failed(&mut self, config: &RemoteJwks, error: String, now_ms: u64) {
        self.in_flight = false;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let wait = if self.consecutive_failures <= config.num_retries {
            let exp = self.consecutive_failures.saturating_sub(1).min(16);
            (config.retry_base * 2u32.pow(exp)).min(config.retry_max)
        } else {
            config.failed_refetch
        };
        self.next_attempt_ms = now_ms.saturating_add(millis(wait));
        self.last_error = Some(error);
    }

    /// The keys held, if any.
    pub fn keys(&self) -> Option<&Arc<KeySet>> {
        self.keys.as_ref()
    }

    /// When the held keys were fetched.
    pub fn fetched_at_ms(&self) -> Option<u64> {
        self.fetched_at_ms
    }

    /// The last fetch error, until a fetch succeeds.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RemoteJwks {
        RemoteJwks {
            uri: "http://jwks/keys".into(),
            cluster: "jwks".into(),
            authority: "jwks".into(),
            path: "/keys".into(),
            timeout: Duration::from_secs(1),
            cache_duration: Duration::from_secs(60),
            fetch_at_start: false,
            failed_refetch: Duration::from_secs(5),
            num_retries: 2,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(150),
        }
    }

    fn keys() -> Arc<KeySet> {
        Arc::new(KeySet::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap())
    }

    #[test]
    fn fetches_then_serves_then_refreshes() {
        let cfg = config();
        let mut s = RemoteState::default();
        assert!(matches!(s.availability(&cfg, 0), Availability::Pending));
        assert!(s.should_fetch(&cfg, 0));
        s.fetch_started();
        assert!(!s.should_fetch(&cfg, 0));
        s.install(keys(), 0);
        assert!(matches!(s.availability(&cfg, 1), Availability::Ready(_)));
        assert!(!s.should_fetch(&cfg, 59_999));
        assert!(s.should_fetch(&cfg, 60_000));
        // Expired keys are not used: the request waits for the refresh.
        assert!(matches!(
            s.availability(&cfg, 60_000),
            Availability::Pending
        ));
        // A failed refresh leaves no key to serve: refused until the next fetch succeeds, as in
        // Envoy without async_fetch.
        s.fetch_started();
        assert!(matches!(
            s.availability(&cfg, 60_000),
            Availability::Pending
        ));
        s.fetch_failed(&cfg, "503".into(), 60_000);
        assert!(matches!(s.availability(&cfg, 60_001), Availability::Failed));
        assert!(matches!(
            s.availability(&cfg, 60_100),
            Availability::Pending
        ));
        s.fetch_started();
        s.install(keys(), 60_200);
        assert!(matches!(
            s.availability(&cfg, 60_201),
            Availability::Ready(_)
        ));
    }

    #[test]
    fn with_async_fetch_a_failed_refresh_keeps_the_last_good_keys() {
        let cfg = RemoteJwks {
            fetch_at_start: true,
            ..config()
        };
        let mut s = RemoteState::default();
        s.fetch_started();
        s.install(keys(), 0);
        s.fetch_started();
        s.fetch_failed(&cfg, "503".into(), 60_000);
        assert!(matches!(
            s.availability(&cfg, 600_000),
            Availability::Ready(_)
        ));
    }

    #[test]
    fn backs_off_then_waits_failed_refetch() {
        let cfg = config();
        let mut s = RemoteState::default();
        s.fetch_started();
        s.fetch_failed(&cfg, "down".into(), 0);
        assert!(matches!(s.availability(&cfg, 50), Availability::Failed));
        assert!(s.should_fetch(&cfg, 100));
        s.fetch_started();
        s.fetch_failed(&cfg, "down".into(), 100);
        assert!(
            !s.should_fetch(&cfg, 249),
            "second back-off is capped at retry_max"
        );
        assert!(s.should_fetch(&cfg, 250));
        s.fetch_started();
        s.fetch_failed(&cfg, "down".into(), 250);
        assert!(
            !s.should_fetch(&cfg, 5_249),
            "retries spent: wait failed_refetch"
        );
        assert!(s.should_fetch(&cfg, 5_250));
        assert_eq!(s.last_error(), Some("down"));
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let cfg = config();
        let mut s = RemoteState::default();
        s.install(keys(), 0);
        assert!(s.allow_unknown_kid_refetch(1_000));
        assert!(s.should_fetch(&cfg, 1_000));
        s.fetch_started();
        s.install(keys(), 1_100);
        assert!(!s.allow_unknown_kid_refetch(5_000));
        assert!(!s.should_fetch(&cfg, 5_000));
        assert!(s.allow_unknown_kid_refetch(11_000));
    }
}

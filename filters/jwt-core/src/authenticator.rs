//! The compiled filter: from request headers to an [`Outcome`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::TokenCache;
use crate::config::JwtAuthentication;
use crate::extract::{Found, Location, extract};
use crate::jwks::{KeySet, NoHost, SignatureHost};
use crate::output::{self, Mutations};
use crate::provider::{Keys, Provider, RemoteJwks};
use crate::remote::{Availability, RemoteState};
use crate::requirement::{self, Requirement};
use crate::rules::RouteMatcher;
use crate::token::Jwt;
use crate::verify::check_claims;
use crate::{ConfigError, Headers, Status, header};

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through after applying these changes.
    Allow(Mutations),
    /// Answer it with this local reply.
    Deny(Denial),
    /// Hold it until these providers' remote keys are fetched (or fail), then ask again.
    NeedKeys(Vec<usize>),
    /// The headers cannot be the request's (no `:method`, which every request has): the host
    /// failed to hand them over. Envoy answers a failed read with an empty list, which would match
    /// no rule and pass unchecked, so it is refused instead.
    Unreadable,
}

/// A local reply for a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub status: Status,
    /// 401, or 403 for a disallowed audience.
    pub http_status: u32,
    /// `WWW-Authenticate` value (RFC 6750).
    pub www_authenticate: String,
    /// Response body: the status message.
    pub body: String,
}

/// Counts since the last [`Authenticator::take_tally`], for the host's stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Tokens found in the verified-token cache.
    pub cache_hits: u64,
    /// Tokens that had to be parsed and have their signature checked.
    pub cache_misses: u64,
}

#[derive(Debug)]
struct Runtime {
    cache: TokenCache,
    remote: RemoteState,
}

#[derive(Debug)]
struct Rule {
    matcher: RouteMatcher,
    requirement: Option<Arc<Requirement>>,
}

/// The compiled configuration plus per-worker state (token caches, remote key state).
#[derive(Debug)]
pub struct Authenticator {
    providers: Vec<Provider>,
    runtime: Vec<Runtime>,
    rules: Vec<Rule>,
    /// Every provider's output headers, removed from every request before anything is added.
    output_headers: Vec<String>,
    bypass_cors_preflight: bool,
    stat_prefix: Option<String>,
    tally: Tally,
    host: Box<dyn SignatureHost>,
}

impl std::fmt::Debug for dyn SignatureHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureHost")
    }
}

enum Verdict {
    Ok(Mutations),
    Fail(Status),
    NeedKeys(Vec<usize>),
}

impl Authenticator {
    /// Parses and compiles the plugin configuration (Envoy's `JwtAuthentication` JSON).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::new(&JwtAuthentication::from_json(json)?)
    }

    /// Compiles a parsed configuration, checking everything that spans fields.
    pub fn new(raw: &JwtAuthentication) -> Result<Self, ConfigError> {
        if raw.filter_state_rules.is_some() {
            return Err(ConfigError::unsupported(
                "filter_state_rules",
                "not supported by the jwt-auth Wasm filter; use rules",
            ));
        }
        if raw.strip_failure_response == Some(true) {
            return Err(ConfigError::unsupported(
                "strip_failure_response",
                "not supported by the jwt-auth Wasm filter",
            ));
        }
        let mut providers = Vec::new();
        let mut index = BTreeMap::new();
        for (name, p) in &raw.providers {
            index.insert(name.clone(), providers.len());
            providers.push(Provider::compile(name, p)?);
        }
        let mut named = BTreeMap::new();
        for (name, r) in &raw.requirement_map {
            let compiled = requirement::compile(r, &index, &format!("requirement_map.{name}"))?;
            named.insert(name.clone(), compiled.map(Arc::new));
        }
        let mut rules = Vec::new();
        for (i, rule) in raw.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            let matcher = RouteMatcher::compile(&rule.route_match, &format!("{field}.match"))?;
            let requirement = match (&rule.requires, &rule.requirement_name) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        field,
                        "set either requires or requirement_name, not both",
                    ));
                }
                (Some(r), None) => {
                    requirement::compile(r, &index, &format!("{field}.requires"))?.map(Arc::new)
                }
                (None, Some(name)) => named.get(name).cloned().ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{field}.requirement_name"),
                        format!("{name:?} is not in requirement_map"),
                    )
                })?,
                (None, None) => None,
            };
            rules.push(Rule {
                matcher,
                requirement,
            });
        }
        let mut output_headers: Vec<String> = Vec::new();
        for p in &providers {
            let names = p
                .forward_payload_header
                .iter()
                .chain(p.claim_to_headers.iter().map(|(h, _)| h));
            for name in names {
                if !output_headers.contains(name) {
                    output_headers.push(name.clone());
                }
            }
        }
        let runtime = providers
            .iter()
            .map(|p| Runtime {
                cache: TokenCache::new(p.cache_size),
                remote: RemoteState::default(),
            })
            .collect();
        Ok(Authenticator {
            providers,
            runtime,
            rules,
            output_headers,
            bypass_cors_preflight: raw.bypass_cors_preflight,
            stat_prefix: raw.stat_prefix.clone(),
            tally: Tally::default(),
            host: Box::new(NoHost),
        })
    }

    /// Lets `host` verify the signatures it can (see [`SignatureHost`]).
    pub fn set_signature_host(&mut self, host: Box<dyn SignatureHost>) {
        self.host = host;
    }

    /// The compiled providers, in name order (their index is what [`Outcome::NeedKeys`] names).
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// What an operator should know about a configuration that loads: providers that can verify
    /// no token, because their key set has no key this filter can use (Envoy's `jwt_authn` loads
    /// such a configuration too and rejects those providers' tokens).
    pub fn warnings(&self) -> Vec<String> {
        self.providers
            .iter()
            .filter_map(|p| match &p.keys {
                Keys::Local(keys) if keys.keys().is_empty() => Some(format!(
                    "provider {:?}: local_jwks has no usable signing key ({}); its tokens are rejected",
                    p.name,
                    keys.skipped().join("; ")
                )),
                _ => None,
            })
            .collect()
    }

    /// Every provider's output headers (`forward_payload_header`, `claim_to_headers`), which are
    /// removed from every request.
    pub fn output_headers(&self) -> &[String] {
        &self.output_headers
    }

    /// `stat_prefix` from the configuration.
    pub fn stat_prefix(&self) -> Option<&str> {
        self.stat_prefix.as_deref()
    }

    /// The remote JWKS settings and state of provider `index`, if its keys are remote.
    pub fn remote(&mut self, index: usize) -> Option<(&RemoteJwks, &mut RemoteState)> {
        match (
            &self.providers.get(index)?.keys,
            self.runtime.get_mut(index),
        ) {
            (Keys::Remote(cfg), Some(rt)) => Some((cfg, &mut rt.remote)),
            _ => None,
        }
    }

    /// Installs fetched keys for provider `index`; cached tokens of that provider are forgotten,
    /// since a key they were verified with may be gone.
    pub fn install_keys(&mut self, index: usize, keys: Arc<KeySet>, fetched_at_ms: u64) {
        if let Some(rt) = self.runtime.get_mut(index) {
            rt.remote.install(keys, fetched_at_ms);
            rt.cache.clear();
        }
    }

    /// Counts since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// Decides what to do with a request, given its headers and the time in milliseconds.
    pub fn authenticate(&mut self, headers: &Headers, now_ms: u64) -> Outcome {
        if header(headers, ":method").is_none() {
            return Outcome::Unreadable;
        }
        // Output headers are removed whatever happens next: only a verified token may set them.
        let unverified = || Outcome::Allow(Mutations::default().finish(&self.output_headers, None));
        if self.bypass_cors_preflight && is_cors_preflight(headers) {
            return unverified();
        }
        let Some(requirement) = self
            .rules
            .iter()
            .find(|r| r.matcher.matches(headers))
            .and_then(|r| r.requirement.clone())
        else {
            return unverified();
        };
        // As Envoy, the requirement's checks run one after another on the request's headers:
        // each removes its providers' output headers as it starts, and each good token removes
        // its own header and adds its outputs at once, whether or not its group then succeeds.
        // So a later check does not find a token an earlier one removed, and the upstream gets
        // what the last change left. The working headers are the request's own until a change
        // is made (a forwarded token without outputs makes none): no copy per request.
        let is_output = |n: &str| {
            self.output_headers
                .iter()
                .any(|o| n.eq_ignore_ascii_case(o))
        };
        let mut work: Work = if headers.iter().any(|(n, _)| is_output(n)) {
            Cow::Owned(
                headers
                    .iter()
                    .filter(|(n, _)| !is_output(n))
                    .cloned()
                    .collect(),
            )
        } else {
            Cow::Borrowed(headers)
        };
        match self.evaluate(&requirement, &mut work, now_ms) {
            Verdict::Ok(m) => {
                let mut m = changes(headers, &work, &self.output_headers, m)
                    .finish(&self.output_headers, None);
                // The path as the checks left it: a token parameter removed by a check whose
                // group then failed stays removed, as in Envoy.
                let (before, after) = (header(headers, ":path"), header(&work, ":path"));
                if after != before {
                    m.path = after.map(str::to_string);
                }
                Outcome::Allow(m)
            }
            Verdict::Fail(status) => Outcome::Deny(denial(status, headers)),
            Verdict::NeedKeys(mut providers) => {
                providers.sort_unstable();
                providers.dedup();
                Outcome::NeedKeys(providers)
            }
        }
    }

    fn evaluate(&mut self, requirement: &Requirement, work: &mut Work, now_ms: u64) -> Verdict {
        match requirement {
            Requirement::Provider {
                provider,
                audiences,
            } => {
                self.sanitize(&[*provider], work);
                let found = extract(&self.providers[*provider].locations, work);
                if found.is_empty() {
                    return Verdict::Fail(Status::JwtMissed);
                }
                let mut mutations = Mutations::default();
                // Envoy verifies the last token found first; every one must be good.
                for f in found.iter().rev() {
                    match self.verify(*provider, audiences.as_deref(), f, None, now_ms) {
                        Verdict::Ok(m) => {
                            apply(&m, work);
                            mutations.extend(m);
                        }
                        other => return other,
                    }
                }
                Verdict::Ok(mutations)
            }
            Requirement::AllowMissing { among } | Requirement::AllowMissingOrFailed { among } => {
                let tolerate_failure =
                    matches!(requirement, Requirement::AllowMissingOrFailed { .. });
                let among: Vec<usize> = match among {
                    Some(list) => list.clone(),
                    None => (0..self.providers.len()).collect(),
                };
                self.sanitize(&among, work);
                let locations: Vec<Location> = among
                    .iter()
                    .flat_map(|p| self.providers[*p].locations.iter().cloned())
                    .collect();
                let found = extract(&locations, work);
                let mut mutations = Mutations::default();
                let mut need = Vec::new();
                // Unlike Envoy, which under allow_missing lets the request through when only the
                // last token it checks is good, every present token must be good here.
                for f in found.iter().rev() {
                    match self.verify_by_issuer(f, &among, now_ms) {
                        Verdict::Ok(m) => {
                            apply(&m, work);
                            mutations.extend(m);
                        }
                        Verdict::NeedKeys(p) => need.extend(p),
                        Verdict::Fail(_) if tolerate_failure => {}
                        fail @ Verdict::Fail(_) => return fail,
                    }
                }
                if need.is_empty() {
                    Verdict::Ok(mutations)
                } else {
                    Verdict::NeedKeys(need)
                }
            }
            Requirement::Any(children) => {
                let mut need = Vec::new();
                // Envoy: the last failure that is not "missing" or "unknown issuer" (a token meant
                // for another provider) speaks for the group.
                let mut status = Status::JwtMissed;
                for c in children {
                    // As in Envoy, the first good requirement ends the group: later ones are not
                    // checked and add no headers.
                    match self.evaluate(c, work, now_ms) {
                        Verdict::Ok(m) => return Verdict::Ok(m),
                        Verdict::NeedKeys(p) => need.extend(p),
                        Verdict::Fail(s) => {
                            if !matches!(s, Status::JwtMissed | Status::JwtUnknownIssuer) {
                                status = s;
                            }
                        }
                    }
                }
                if need.is_empty() {
                    Verdict::Fail(status)
                } else {
                    Verdict::NeedKeys(need)
                }
            }
            Requirement::All(children) => {
                let mut mutations = Mutations::default();
                let mut need = Vec::new();
                for c in children {
                    match self.evaluate(c, work, now_ms) {
                        Verdict::Ok(m) => mutations.extend(m),
                        Verdict::NeedKeys(p) => need.extend(p),
                        fail @ Verdict::Fail(_) => return fail,
                    }
                }
                if need.is_empty() {
                    Verdict::Ok(mutations)
                } else {
                    Verdict::NeedKeys(need)
                }
            }
        }
    }

    /// Removes the output headers of `providers` from `work`, as each Envoy authenticator does
    /// when it starts.
    fn sanitize(&self, providers: &[usize], work: &mut Work) {
        for p in providers {
            let provider = &self.providers[*p];
            if provider.claim_to_headers.is_empty() && provider.forward_payload_header.is_none() {
                continue;
            }
            let is_output = |n: &str| {
                provider
                    .claim_to_headers
                    .iter()
                    .any(|(o, _)| n.eq_ignore_ascii_case(o))
                    || provider
                        .forward_payload_header
                        .as_deref()
                        .is_some_and(|o| n.eq_ignore_ascii_case(o))
            };
            if work.iter().any(|(n, _)| is_output(n)) {
                work.to_mut().retain(|(n, _)| !is_output(n));
            }
        }
    }

    /// For requirements without a provider: the token's issuer picks the provider (the first
    /// with that issuer, else the first without one) among `among` that read this location.
    fn verify_by_issuer(&mut self, found: &Found, among: &[usize], now_ms: u64) -> Verdict {
        let jwt = match Jwt::parse(&found.token) {
            Ok(jwt) => Arc::new(jwt),
            Err(s) => return Verdict::Fail(s),
        };
        let providers = &self.providers;
        let accepts = |i: &&usize| providers[**i].locations.contains(&found.location);
        let provider = among
            .iter()
            .filter(accepts)
            .find(|i| providers[**i].issuer == jwt.iss)
            .or_else(|| {
                among
                    .iter()
                    .filter(accepts)
                    .find(|i| providers[**i].issuer.is_empty())
            })
            .copied();
        match provider {
            Some(p) => self.verify(p, None, found, Some(jwt), now_ms),
            _ => Verdict::Fail(Status::JwtUnknownIssuer),
        }
    }

    fn verify(
        &mut self,
        index: usize,
        audiences: Option<&[String]>,
        found: &Found,
        parsed: Option<Arc<Jwt>>,
        now_ms: u64,
    ) -> Verdict {
        let now = now_ms / 1000;
        let provider = &self.providers[index];
        let runtime = &mut self.runtime[index];
        // A cached token is only as good as the keys that verified it: expired or missing
        // remote keys send it down the full path, which waits for or refuses on the keys.
        let keys_ready = match &provider.keys {
            Keys::Local(_) => true,
            Keys::Remote(cfg) => matches!(
                runtime.remote.availability(cfg, now_ms),
                Availability::Ready(_)
            ),
        };
        if keys_ready && let Some(jwt) = runtime.cache.get(&found.token, now, provider.clock_skew) {
            self.tally.cache_hits += 1;
            return match check_claims(provider, audiences, &jwt, now) {
                Ok(()) => Verdict::Ok(output::for_verified(provider, &jwt, found)),
                Err(s) => Verdict::Fail(s),
            };
        }
        self.tally.cache_misses += 1;
        let jwt = match parsed.map_or_else(|| Jwt::parse(&found.token).map(Arc::new), Ok) {
            Ok(jwt) => jwt,
            Err(s) => return Verdict::Fail(s),
        };
        if let Err(s) = check_claims(provider, audiences, &jwt, now) {
            return Verdict::Fail(s);
        }
        let keys = match &provider.keys {
            Keys::Local(keys) => Arc::clone(keys),
            Keys::Remote(cfg) => match runtime.remote.availability(cfg, now_ms) {
                Availability::Ready(keys) => keys,
                Availability::Pending => return Verdict::NeedKeys(vec![index]),
                Availability::Failed => return Verdict::Fail(Status::JwksFetchFail),
            },
        };
        match keys.verify_with(&jwt, self.host.as_ref()) {
            Ok(()) => {
                let mutations = output::for_verified(provider, &jwt, found);
                if jwt.raw().len() <= provider.cache_max_token {
                    runtime.cache.insert(jwt);
                }
                Verdict::Ok(mutations)
            }
            // A key id we have never seen may be a key the issuer just rotated in: refetch once
            // (rate-limited) before refusing. Envoy refuses at once (envoy#39643).
            Err(Status::JwksKidAlgMismatch)
                if matches!(provider.keys, Keys::Remote(_))
                    && jwt.kid.as_deref().is_some_and(|kid| !keys.has_kid(kid))
                    && runtime.remote.allow_unknown_kid_refetch(now_ms) =>
            {
                Verdict::NeedKeys(vec![index])
            }
            Err(s) => Verdict::Fail(s),
        }
    }
}

/// Applies a good token's changes to the working headers, as Envoy applies them at once: its
/// header is removed, its parameter leaves `:path`, its outputs are added.
fn apply(m: &Mutations, work: &mut Work) {
    let removed = |n: &str| m.remove_headers.iter().any(|r| n.eq_ignore_ascii_case(r));
    if work.iter().any(|(n, _)| removed(n)) {
        work.to_mut().retain(|(n, _)| !removed(n));
    }
    if !m.remove_params.is_empty()
        && let Some((_, path)) = work.to_mut().iter_mut().find(|(n, _)| n == ":path")
    {
        for name in &m.remove_params {
            *path = crate::extract::remove_query_param(path, name);
        }
    }
    if !m.set_headers.is_empty() {
        work.to_mut().extend(m.set_headers.iter().cloned());
    }
}

/// The request's headers as the checks change them: borrowed until the first change.
type Work<'a> = Cow<'a, Headers>;

/// The header changes that turn `before` into `work`: every name whose values differ is removed
/// and given its values in `work` (pseudo-headers aside: `:path` follows `remove_params`).
/// `outputs` are removed from every request let through ([`Mutations::finish`]), so each one
/// the checks set is set again even when the client sent that very value: comparing would drop
/// a verified identity header a client happened to repeat.
fn changes(before: &Headers, work: &Headers, outputs: &[String], m: Mutations) -> Mutations {
    // Compared in place, without copying values: this runs on every request.
    fn values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    let mut touched: Vec<String> = Vec::new();
    // Nothing changed (a forwarded token, no outputs): no name to compare.
    let (before_names, work_names) = if before == work {
        (&[][..], &[][..])
    } else {
        (before, work)
    };
    for (name, _) in before_names.iter().chain(work_names) {
        if name.starts_with(':') || touched.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        if !values(before, name).eq(values(work, name)) {
            touched.push(name.to_ascii_lowercase());
        }
    }
    for name in outputs {
        if !touched.iter().any(|t| t.eq_ignore_ascii_case(name))
            && values(work, name).next().is_some()
        {
            touched.push(name.to_ascii_lowercase());
        }
    }
    let set_headers = work
        .iter()
        .filter(|(n, _)| touched.iter().any(|t| n.eq_ignore_ascii_case(t)))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    Mutations {
        remove_headers: touched,
        set_headers,
        remove_params: m.remove_params,
        path: None,
        publish: m.publish,
    }
}

fn is_cors_preflight(headers: &Headers) -> bool {
    header(headers, ":method") == Some("OPTIONS")
        && header(headers, "origin").is_some_and(|o| !o.is_empty())
        && header(headers, "access-control-request-method").is_some_and(|m| !m.is_empty())
}

/// The local reply for `status`: Envoy's body and `WWW-Authenticate` (realm = the request URL
/// without its query), plus an RFC 6750 `error_description`.
fn denial(status: Status, headers: &Headers) -> Denial {
    let scheme = header(headers, ":scheme").unwrap_or("http");
    let host = header(headers, ":authority").unwrap_or("");
    let path = header(headers, ":path").unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let realm = format!("{scheme}://{host}{path}").replace('"', "%22");
    let www_authenticate = if status == Status::JwtMissed {
        format!("Bearer realm=\"{realm}\"")
    } else {
        format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
            status.message()
        )
    };
    Denial {
        status,
        http_status: status.http_status(),
        www_authenticate,
        body: status.message().to_string(),
    }
}

#[cfg(test)]
mod tests;

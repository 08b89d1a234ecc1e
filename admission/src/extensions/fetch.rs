//! Fetching an `http(s)://` module, as the proxy would, to check what it would run: only from
//! a host `extensions.httpHosts` lists, redirects only on that origin, the body capped and the
//! whole fetch bounded in time. An object cannot make the webhook reach any other address.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::LOCATION;

/// Redirects followed on the module's own origin.
const MAX_REDIRECTS: usize = 3;

/// Why a module could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL's host is not listed; nothing was sent.
    #[error("host {0} is not in extensions.httpHosts")]
    HostNotAllowed(String),
    /// The URL does not parse, or is not http(s).
    #[error("invalid URL: {0}")]
    Url(String),
    /// A redirect left the origin, or there were too many.
    #[error("{0}")]
    Redirect(String),
    /// The module is larger than `extensions.maxModuleBytes`.
    #[error("module larger than extensions.maxModuleBytes ({0} bytes)")]
    TooLarge(usize),
    /// An HTTP status other than 200.
    #[error("HTTP {0}")]
    Status(u16),
    /// The host could not be reached or did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// An HTTP client bound to the allowed hosts.
pub struct Fetcher {
    client: reqwest::Client,
    hosts: Vec<glob::Pattern>,
    max_bytes: usize,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher for these host globs (already checked by the configuration).
    pub fn new(hosts: &[String], max_bytes: usize, timeout: Duration) -> Result<Self, String> {
        let hosts = hosts
            .iter()
            .map(|h| glob::Pattern::new(&h.to_ascii_lowercase()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("meshgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            hosts,
            max_bytes,
            timeout,
        })
    }

    /// Whether `url`'s host may be asked: `host` or `host:port` matches a listed glob.
    fn allowed(&self, url: &Url) -> Result<(), FetchError> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let with_port = match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let options = crate::images::glob_options();
        if self
            .hosts
            .iter()
            .any(|p| p.matches_with(&host, options) || p.matches_with(&with_port, options))
        {
            Ok(())
        } else {
            Err(FetchError::HostNotAllowed(crate::review::decode::clip(
                &with_port,
            )))
        }
    }

    /// The module's bytes, within the bounds.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let start = Url::parse(url).map_err(|e| FetchError::Url(e.to_string()))?;
        if !matches!(start.scheme(), "http" | "https") {
            return Err(FetchError::Url(format!(
                "scheme {} is not http(s)",
                start.scheme()
            )));
        }
        if !start.username().is_empty() || start.password().is_some() {
            return Err(FetchError::Url("credentials in the URL".into()));
        }
        self.allowed(&start)?;
        match tokio::time::timeout(self.timeout, self.fetch_from(start)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unavailable(format!(
                "no complete answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn fetch_from(&self, start: Url) -> Result<Vec<u8>, FetchError> {
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Unavailable(transport(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| FetchError::Redirect("redirect without a location".into()))?;
                // The proxy follows redirects too; the webhook checks what it gets only where
                // the allowed host sends it on its own origin.
                if !(next.scheme() == start.scheme()
                    && next.host_str() == start.host_str()
                    && next.port_or_known_default() == start.port_or_known_default())
                {
                    return Err(FetchError::Redirect(
                        "redirect to another origin refused".into(),
                    ));
                }
                url = next;
                continue;
            }
            if status != reqwest::StatusCode::OK {
                return Err(FetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > self.max_bytes as u64)
            {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            // Sized once from the declared length (already bounded): growing by doubling
            // would briefly hold one and a half times the module.
            let declared = response.content_length().unwrap_or(0) as usize;
            let mut bytes = Vec::with_capacity(declared.min(self.max_bytes));
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| FetchError::Unavailable(transport(&e)))?
            {
                if bytes.len() + chunk.len() > self.max_bytes {
                    return Err(FetchError::TooLarge(self.max_bytes));
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(bytes);
        }
        Err(FetchError::Redirect("too many redirects".into()))
    }
}

/// A transport error without the URL (it is in the message already).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transfer failed".into()
    }
}

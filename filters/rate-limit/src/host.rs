//! The request and the shared store, as the core sees them, through proxy-wasm hostcalls. The
//! store is [`meshgate_wasm_host::HostStore`], the one jwt-auth uses too.

use std::cell::RefCell;
use std::collections::HashMap;

use meshgate_ratelimit::descriptor::{PayloadMemo, Request, Unreadable};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// The effective context's request; each attribute is fetched at most once, and only if a
/// descriptor asks for it. A hostcall that fails (rather than finding nothing) is
/// [`Unreadable`]: the core refuses the request instead of treating the attribute as absent.
pub struct HostRequest<'a> {
    headers: RefCell<HashMap<String, Option<String>>>,
    payloads: &'a PayloadMemo,
}

impl<'a> HostRequest<'a> {
    /// The current request, reusing `payloads`' last parse.
    pub fn new(payloads: &'a PayloadMemo) -> Self {
        HostRequest {
            headers: RefCell::default(),
            payloads,
        }
    }
}

use meshgate_wasm_host::text;

impl Request for HostRequest<'_> {
    fn header(&self, name: &str) -> Result<Option<String>, Unreadable> {
        if let Some(cached) = self.headers.borrow().get(name) {
            return Ok(cached.clone());
        }
        let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map_err(|_| Unreadable)?
            .map(text);
        self.headers
            .borrow_mut()
            .insert(name.to_string(), value.clone());
        Ok(value)
    }

    fn source_address(&self) -> Result<Option<String>, Unreadable> {
        property(&["source", "address"])
    }

    fn jwt_payload(&self, name: &str) -> Result<Option<String>, Unreadable> {
        // Published by meshgate's jwt-auth as filter state (see its README).
        let key = format!("meshgate.jwt_payload.{name}");
        property(&[key.as_str()])
    }

    fn jwt_claim(&self, payload: &str, path: &[String]) -> Result<Option<String>, Unreadable> {
        match self.jwt_payload(payload)? {
            Some(text) => self.payloads.claim(text, path),
            None => Ok(None),
        }
    }
}

/// A property as text: `Ok(None)` when the host has none (the SDK maps `NotFound` to `None`).
fn property(path: &[&str]) -> Result<Option<String>, Unreadable> {
    Ok(hostcalls::get_property(path.to_vec())
        .map_err(|_| Unreadable)?
        .map(text))
}

pub use meshgate_wasm_host::{HostStore, now_ms};

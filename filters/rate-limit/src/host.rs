//! The request and the shared store, as the core sees them, through proxy-wasm hostcalls.

use std::cell::RefCell;
use std::collections::HashMap;

use meshgate_ratelimit::descriptor::Request;
use meshgate_ratelimit::table::{SetError, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// The effective context's request; each attribute is fetched at most once, and only if a
/// descriptor asks for it.
#[derive(Default)]
pub struct HostRequest {
    headers: RefCell<HashMap<String, Option<String>>>,
}

use meshgate_wasm_host::text;

impl Request for HostRequest {
    fn header(&self, name: &str) -> Option<String> {
        if let Some(cached) = self.headers.borrow().get(name) {
            return cached.clone();
        }
        let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
            .map(text);
        self.headers
            .borrow_mut()
            .insert(name.to_string(), value.clone());
        value
    }

    fn source_address(&self) -> Option<String> {
        hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .map(text)
    }

    fn jwt_payload(&self, name: &str) -> Option<String> {
        // Published by meshgate's jwt-auth as filter state (see its README).
        let key = format!("meshgate.jwt_payload.{name}");
        hostcalls::get_property(vec![key.as_str()])
            .ok()
            .flatten()
            .map(text)
    }
}

/// proxy-wasm shared data: one store for every worker VM with the same `vm_id`.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

pub use meshgate_wasm_host::now_ms;

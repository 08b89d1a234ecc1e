//! Signature checks through Envoy's `verify_signature` foreign function (BoringSSL, outside the
//! sandbox). RSA verification in Wasm costs milliseconds; natively it costs microseconds.
//!
//! Envoy builds without the function (or other hosts) answer the call with an error: the filter
//! then notes that and verifies every later signature in Rust.

use std::cell::Cell;

use meshgate_jwt::jwks::SignatureHost;
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::host;

/// `envoy.source.extensions.common.wasm.VerifySignatureArguments`.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureResult`.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifySignatureResult {
    #[prost(bool, tag = "1")]
    result: bool,
    #[prost(string, tag = "2")]
    error: String,
}

/// Envoy's native verifier, while it answers.
#[derive(Debug)]
pub struct EnvoyVerifier {
    available: Cell<bool>,
}

impl Default for EnvoyVerifier {
    fn default() -> Self {
        EnvoyVerifier {
            available: Cell::new(true),
        }
    }
}

impl SignatureHost for EnvoyVerifier {
    fn verify(&self, hash: &str, spki: &[u8], signature: &[u8], message: &[u8]) -> Option<bool> {
        if !self.available.get() {
            return None;
        }
        let arguments = VerifySignatureArguments {
            hash_function: hash.to_string(),
            public_key: spki.to_vec(),
            signature: signature.to_vec(),
            text: message.to_vec(),
        };
        let encoded = prost::Message::encode_to_vec(&arguments);
        let answer = hostcalls::call_foreign_function("verify_signature", Some(&encoded));
        match answer
            .ok()
            .flatten()
            .and_then(|bytes| <VerifySignatureResult as prost::Message>::decode(&bytes[..]).ok())
        {
            // A mismatch comes back as result=false with an error text; both mean "invalid".
            Some(result) => Some(result.result),
            None => {
                self.available.set(false);
                host::log(
                    LogLevel::Info,
                    "jwt-auth: host has no verify_signature; verifying signatures in Wasm",
                );
                None
            }
        }
    }
}

//! Free loopback ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that is free now and was not handed out before in this process.
///
/// The port is released before the caller binds it, so another process could take it in between;
/// remembering what this process handed out at least keeps parallel tests from colliding.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("binding an ephemeral port on 127.0.0.1")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

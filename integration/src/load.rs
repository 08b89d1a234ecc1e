//! Open-loop HTTPS load at a fixed rate: requests leave on schedule whether or not earlier
//! ones have answered, so a stall of the server shows up in the latencies instead of silently
//! slowing the sender (coordinated omission). Latency runs from the moment a request leaves:
//! the sender's timer fires up to a millisecond late, and that is not the server's time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a fixed-rate run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests scheduled.
    pub sent: usize,
    /// Answers with a 2xx status.
    pub ok: usize,
    /// Transport errors and non-2xx answers.
    pub failed: usize,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile in milliseconds.
    pub p99_ms: f64,
    /// Slowest answer in milliseconds.
    pub max_ms: f64,
    /// Answers per second over the run.
    pub achieved_rps: f64,
}

/// POSTs `body` to `url` `rate` times a second for `duration`.
pub async fn fixed_rate(
    client: reqwest::Client,
    url: &str,
    body: bytes::Bytes,
    rate: u32,
    duration: Duration,
) -> LoadResult {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let failed = Arc::new(Mutex::new(0usize));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        let (latencies, failed) = (latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match result {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            let elapsed = sent.elapsed();
            if ok {
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(elapsed);
            } else {
                *failed.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort();
    let ms = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let failed = *failed.lock().unwrap_or_else(|e| e.into_inner());
    LoadResult {
        sent: total,
        ok: latencies.len(),
        failed,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        max_ms: latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        achieved_rps: latencies.len() as f64 / wall,
    }
}

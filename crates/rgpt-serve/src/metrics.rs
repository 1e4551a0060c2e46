//! `GET /metrics` in Prometheus's text format: requests by status, tokens
//! read and generated, images encoded and found in the cache, the queue's
//! depth, the running batch's size, and
//! histograms of the time to the first token and of the whole request.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled: AtomicU64,
    images_encoded: AtomicU64,
    image_cache_hits: AtomicU64,
    queued: AtomicI64,
    batch: AtomicI64,
    first_token: Mutex<Histogram>,
    latency: Mutex<Histogram>,
}

impl Metrics {
    /// A request answered with `status` (a stream counts when it starts).
    pub fn request(&self, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry(status).or_default() += 1;
        }
    }

    /// A request whose client left before its answer was done.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// An image a request needed: encoded now, or found in the cache.
    pub fn image_encoded(&self, cache_hit: bool) {
        let counter = if cache_hit {
            &self.image_cache_hits
        } else {
            &self.images_encoded
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn queued(&self, change: i64) {
        self.queued.fetch_add(change, Ordering::Relaxed);
    }

    pub fn batch(&self, size: i64) {
        self.batch.store(size, Ordering::Relaxed);
    }

    pub fn first_token(&self, after: Duration) {
        if let Ok(mut h) = self.first_token.lock() {
            h.observe(after.as_secs_f64());
        }
    }

    /// A request the engine finished: its tokens and its time since it
    /// was queued.
    pub fn finished(&self, prompt_tokens: usize, generated: usize, after: Duration) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.latency.lock() {
            h.observe(after.as_secs_f64());
        }
    }

    /// Everything, in Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP rgpt_requests_total Chat requests answered, by HTTP status.\n");
        out.push_str("# TYPE rgpt_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for (status, count) in requests.iter() {
                let _ = writeln!(out, "rgpt_requests_total{{status=\"{status}\"}} {count}");
            }
        }
        let counters = [
            (
                "rgpt_prompt_tokens_total",
                "Prompt tokens read.",
                &self.prompt_tokens,
            ),
            (
                "rgpt_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "rgpt_cancelled_total",
                "Requests stopped because their client left.",
                &self.cancelled,
            ),
            (
                "rgpt_images_encoded_total",
                "Images run through the vision tower.",
                &self.images_encoded,
            ),
            (
                "rgpt_image_cache_hits_total",
                "Images found already encoded (a follow-up turn).",
                &self.image_cache_hits,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "rgpt_queue_depth",
                "Requests waiting for the engine.",
                &self.queued,
            ),
            (
                "rgpt_batch_size",
                "Requests the engine is generating for.",
                &self.batch,
            ),
        ];
        for (name, help, value) in gauges {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        if let Ok(h) = self.first_token.lock() {
            h.render(
                &mut out,
                "rgpt_time_to_first_token_seconds",
                "From queueing to the first generated text.",
            );
        }
        if let Ok(h) = self.latency.lock() {
            h.render(
                &mut out,
                "rgpt_request_seconds",
                "From queueing to the last generated token.",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request(200);
        metrics.request(200);
        metrics.request(400);
        metrics.first_token(Duration::from_millis(80));
        metrics.finished(12, 5, Duration::from_millis(700));
        let text = metrics.render();
        for line in [
            "rgpt_requests_total{status=\"200\"} 2",
            "rgpt_requests_total{status=\"400\"} 1",
            "rgpt_prompt_tokens_total 12",
            "rgpt_generated_tokens_total 5",
            "rgpt_queue_depth 0",
            "rgpt_time_to_first_token_seconds_bucket{le=\"0.05\"} 0",
            "rgpt_time_to_first_token_seconds_bucket{le=\"0.1\"} 1",
            "rgpt_request_seconds_bucket{le=\"0.5\"} 0",
            "rgpt_request_seconds_bucket{le=\"1\"} 1",
            "rgpt_request_seconds_bucket{le=\"+Inf\"} 1",
            "rgpt_request_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

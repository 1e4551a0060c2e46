//! A bounded load on `rgpt serve` over loopback: 16 clients at once, each
//! sending two requests (greedy and seeded sampled, different questions
//! and regions). Every answer must equal the one the same request gets
//! alone, and the continuous batch must generate at least 3x the tokens
//! per second of one client's requests served one by one. The same load
//! against one-request-at-a-time serving (`--max-batch 1`) is measured
//! beside it; `scripts/bench_serve.sh` runs this in release mode for
//! docs/benchmarks.md.
mod common;

use std::time::Instant;

use base64::Engine as _;
use common::root;
use common::server::{serve, Server};
use serde_json::{json, Value};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 2;
const TOKENS: u64 = 48;

fn requests() -> Vec<Value> {
    let png = std::fs::read(root().join("tests/fixtures/rgpt-tiny/image.png")).unwrap();
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let questions = [
        "What is <region>?",
        "Describe <region> briefly.",
        "Is <region> red?",
        "Name <region>.",
    ];
    (0..CLIENTS * PER_CLIENT)
        .map(|i| {
            let x = (i % 7) as f64 * 2.0;
            let mut body = json!({
                "model": "rgpt-tiny",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": questions[i % questions.len()]},
                    {"type": "image_url", "image_url": {"url": url}},
                ]}],
                "regions": [{"box": [x, 2.0, x + 18.0, 24.0]}],
                "max_tokens": TOKENS,
                "ignore_eos": true,
                "temperature": 0,
            });
            if i % 2 == 1 {
                body["temperature"] = json!(0.8);
                body["top_p"] = json!(0.9);
                body["seed"] = json!(i);
            }
            body
        })
        .collect()
}

fn ask(server: &Server, body: &Value) -> (String, u64) {
    let reply: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {reply}"))
        .to_string();
    (text, reply["usage"]["completion_tokens"].as_u64().unwrap())
}

/// Every request sent by `CLIENTS` clients at once, each client's in turn:
/// the answers in request order, and generated tokens per second.
fn load(server: &Server, requests: &[Value]) -> (Vec<String>, f64) {
    let started = Instant::now();
    let mut answers: Vec<(usize, String, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    (client..requests.len())
                        .step_by(CLIENTS)
                        .map(|i| {
                            let (text, tokens) = ask(server, &requests[i]);
                            (i, text, tokens)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    answers.sort_by_key(|(i, ..)| *i);
    let tokens: u64 = answers.iter().map(|(_, _, t)| t).sum();
    (
        answers.into_iter().map(|(_, text, _)| text).collect(),
        tokens as f64 / seconds,
    )
}

#[test]
fn sixteen_clients_get_their_own_answers_at_least_three_times_faster() {
    let requests = requests();
    let one_at_a_time = serve(&["--max-batch", "1"]);
    let batched = serve(&["--max-batch", "16"]);
    // Warm both up (first allocations, lazy initialisation).
    ask(&one_at_a_time, &requests[0]);
    ask(&batched, &requests[0]);

    // One client, one request after another.
    let started = Instant::now();
    let alone: Vec<(String, u64)> = requests.iter().map(|r| ask(&one_at_a_time, r)).collect();
    let one_client =
        alone.iter().map(|(_, t)| *t).sum::<u64>() as f64 / started.elapsed().as_secs_f64();
    assert!(alone.iter().all(|(_, t)| *t == TOKENS));
    let alone: Vec<String> = alone.into_iter().map(|(text, _)| text).collect();

    let (unbatched_answers, unbatched) = load(&one_at_a_time, &requests);
    let (batched_answers, batched_rate) = load(&batched, &requests);
    for (i, want) in alone.iter().enumerate() {
        assert_eq!(&unbatched_answers[i], want, "request {i}, one at a time");
        assert_eq!(&batched_answers[i], want, "request {i}, in the batch");
    }
    eprintln!(
        "load: {CLIENTS} clients x {PER_CLIENT} requests x {TOKENS} tokens; tokens/s: one client \
         {one_client:.1}, one-at-a-time serving {unbatched:.1}, continuous batching \
         {batched_rate:.1} ({:.2}x one client, {:.2}x one-at-a-time)",
        batched_rate / one_client,
        batched_rate / unbatched
    );
    assert!(
        batched_rate >= 3.0 * one_client,
        "the batch generated {batched_rate:.1} tokens/s, one client {one_client:.1}: under 3x"
    );
}

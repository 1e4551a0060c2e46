//! `rgpt serve` on the RGPT fixture, through HTTP on a free loopback port:
//! answers, whole and streamed, equal `rgpt generate`'s for the same
//! question, regions and seed (greedy and sampled, each region form), a
//! conversation sent whole continues it, and each bad input is a 4xx in
//! OpenAI's error shape while the server goes on serving.
mod common;

use base64::Engine as _;
use common::server::{serve, Server};
use common::{ok, rgpt, root};
use serde_json::{json, Value};

fn image_url() -> String {
    let png = std::fs::read(root().join("tests/fixtures/rgpt-tiny/image.png")).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// One user message with the fixture's image and `text`.
fn request(text: &str, regions: Value, extra: Value) -> Value {
    let mut body = json!({
        "model": "rgpt-tiny",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": image_url()}},
        ]}],
        "regions": regions,
        "max_tokens": 6,
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

fn post(server: &Server, body: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

/// The `data:` payloads of a streamed answer, and the whole text.
fn stream(server: &Server, body: &Value) -> (Vec<String>, String) {
    let text = reqwest::blocking::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    (data, text)
}

fn answer(server: &Server, body: &Value) -> String {
    let (status, reply) = post(server, body);
    assert_eq!(status, 200, "{reply}");
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Reads a streamed answer until its first generated text.
fn read_until_text(response: &mut reqwest::blocking::Response) {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("\"content\"") {
        let n = response.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended first");
        seen.extend_from_slice(&buffer[..n]);
    }
}

/// What `rgpt generate` answers with these flags.
fn generate(prompt: &str, regions: &[&str], extra: &[&str]) -> String {
    let mut args = vec![
        "generate",
        "--model",
        "tests/fixtures/rgpt-tiny",
        "--image",
        "tests/fixtures/rgpt-tiny/image.png",
        "--prompt",
        prompt,
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--json",
    ];
    for region in regions {
        args.extend(["--region", region]);
    }
    args.extend(extra);
    let report: Value = serde_json::from_str(&ok(&rgpt(&args))).unwrap();
    report["text"].as_str().unwrap().to_string()
}

#[test]
fn answers_equal_rgpt_generate() {
    let server = serve(&[]);
    let greedy = json!({"temperature": 0});
    // A box, a polygon, an RLE, a mask PNG and a point, against the same
    // region given to `rgpt generate` as a SPEC.
    let mask = {
        let mut mask = image::GrayImage::new(40, 30);
        for y in 4..20 {
            for x in 5..25 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let path = std::env::temp_dir().join(format!("rgpt-serve-mask-{}.png", std::process::id()));
        mask.save(&path).unwrap();
        path
    };
    let png = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&mask).unwrap());
    let image_size =
        image::image_dimensions(root().join("tests/fixtures/rgpt-tiny/image.png")).unwrap();
    assert_eq!(image_size, (40, 30), "the mask is drawn for a 40x30 image");
    let mask_spec = format!("mask:{}", mask.display());
    // The box's mask as a COCO RLE, in the JSON form the API takes and the
    // SPEC form `rgpt generate` takes.
    let rle = rgpt_region::RegionSpec::from_xyxy(5.0, 4.0, 25.0, 20.0)
        .to_rle(30, 40)
        .unwrap();
    let cases: Vec<(Value, String)> = vec![
        (json!({"box": [5, 4, 25, 20]}), "box:5,4,25,20".into()),
        (
            json!({"polygon": [[5, 4, 25, 4, 25, 20, 5, 20]]}),
            "poly:5,4,25,4,25,20,5,20".into(),
        ),
        (json!({"point": [20, 15, 6]}), "point:20,15,6".into()),
        (json!({"mask_png": png}), mask_spec),
        (
            json!({"rle": rle.to_json_value()}),
            format!("rle:{}", rle.to_json_string()),
        ),
    ];
    for (region, spec) in &cases {
        let served = answer(
            &server,
            &request("What is <region>?", json!([region]), greedy.clone()),
        );
        let generated = generate("What is <region>?", &[spec], &[]);
        assert_eq!(served, generated, "{region}");
    }
    // Sampled with a seed.
    let sampled = json!({"temperature": 0.9, "top_p": 0.95, "seed": 11});
    let served = answer(
        &server,
        &request(
            "Describe <region>.",
            json!([{"box": [5, 4, 25, 20]}]),
            sampled,
        ),
    );
    let generated = generate(
        "Describe <region>.",
        &["box:5,4,25,20"],
        &["--temperature", "0.9", "--top-p", "0.95", "--seed", "11"],
    );
    assert_eq!(served, generated);
    let _ = std::fs::remove_file(mask);
}

#[test]
fn streams_the_same_answer_in_openai_chunks() {
    let server = serve(&[]);
    let body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0, "stream": true}),
    );
    let (data, text) = stream(&server, &body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = chunks.last().unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let whole = answer(
        &server,
        &request(
            "What is <region>?",
            json!([{"box": [5, 4, 25, 20]}]),
            json!({"temperature": 0}),
        ),
    );
    assert_eq!(streamed, whole);
}

#[test]
fn a_conversation_sent_whole_goes_on() {
    let server = serve(&[]);
    let mut body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}, {"box": [0, 0, 20, 20]}]),
        json!({"temperature": 0}),
    );
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "A shape."}),
        json!({"role": "user", "content": "And <region>?"}),
    ]);
    let (status, reply) = post(&server, &body);
    assert_eq!(status, 200, "{reply}");
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_goes_on() {
    let server = serve(&["--max-image-pixels", "10000", "--max-image-bytes", "100000"]);
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/v1/chat/completions", server.url);
    let error = |status: u16, reply: &Value, says: &str| {
        assert!((400..500).contains(&status), "{status}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says:?} not in {reply}");
        assert!(reply["error"]["type"].is_string(), "{reply}");
    };
    let malformed = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    let status = malformed.status().as_u16();
    error(status, &malformed.json().unwrap(), "not a chat request");

    let box_region = json!([{"box": [5, 4, 25, 20]}]);
    let long_question = format!("What is <region>? {}", "Tell me more. ".repeat(200));
    let cases: Vec<(Value, &str)> = vec![
        (
            request(&long_question, box_region.clone(), json!({})),
            "max_position_embeddings",
        ),
        (
            request(
                "Is <region> left of <region>?",
                box_region.clone(),
                json!({}),
            ),
            "2 <region> placeholder(s) but `regions` has 1",
        ),
        (
            request(
                "What is <region>?",
                json!([{"box": [100, 100, 200, 200]}]),
                json!({}),
            ),
            "region 0",
        ),
        (
            request(
                "What is <region>?",
                json!([{"box": [5, 5, 5, 5]}]),
                json!({}),
            ),
            "empty",
        ),
        (
            request(
                "What is <region>?",
                box_region.clone(),
                json!({"model": "gpt-4"}),
            ),
            "unknown model `gpt-4`",
        ),
        (
            request(
                "What is <region>?",
                box_region.clone(),
                json!({"max_tokens": 100000}),
            ),
            "max_tokens",
        ),
        (
            request(
                "What is <region>?",
                box_region.clone(),
                json!({"temperature": 7}),
            ),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "no image",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]}),
            "image_url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
            "only data: URLs",
        ),
    ];
    for (body, says) in &cases {
        let (status, reply) = post(&server, body);
        error(status, &reply, says);
    }
    // An image over --max-image-pixels (the fixture's 40x30 is 1,200) is
    // refused from its header, before it is decoded.
    let big = image::RgbImage::new(400, 300);
    let mut png = std::io::Cursor::new(Vec::new());
    big.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let mut body = request("What is <region>?", box_region.clone(), json!({}));
    body["messages"][0]["content"][1]["image_url"]["url"] = json!(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    ));
    let (status, reply) = post(&server, &body);
    assert_eq!(status, 413, "{reply}");
    error(status, &reply, "400x300, over this server's 10000 pixels");
    // A body over the limit (an image of --max-image-bytes as base64 and a
    // MiB of text) is refused before it is read whole.
    let long = request(&"x".repeat(2 << 20), box_region.clone(), json!({}));
    let (status, reply) = post(&server, &long);
    assert_eq!(status, 413, "{reply}");
    error(status, &reply, "the request body is over this server's");
    // Still serving: a good request after the bad ones is answered (200).
    answer(
        &server,
        &request("What is <region>?", box_region, json!({"temperature": 0})),
    );
    let health = client.get(format!("{}/health", server.url)).send().unwrap();
    assert_eq!(health.text().unwrap(), "ok");
    let models: Value = client
        .get(format!("{}/v1/models", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "rgpt-tiny");
}

/// Describe Anything's convention: with one `<region>` and no `regions`,
/// the region is where the RGBA image is opaque; the same mask as a PNG
/// gives the same answer.
#[test]
fn a_region_in_the_alpha_channel() {
    let server = serve(&[]);
    let rgb = image::open(root().join("tests/fixtures/rgpt-tiny/image.png"))
        .unwrap()
        .to_rgb8();
    let inside = |x: u32, y: u32| (5..25).contains(&x) && (4..20).contains(&y);
    let rgba = image::RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        image::Rgba([r, g, b, if inside(x, y) { 255 } else { 0 }])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    rgba.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes.into_inner());
    let mut body = request("What is <region>?", json!([]), json!({"temperature": 0}));
    body["messages"][0]["content"][1]["image_url"]["url"] =
        json!(format!("data:image/png;base64,{encoded}"));
    let from_alpha = answer(&server, &body);
    let mask = image::GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        image::Luma([if inside(x, y) { 255 } else { 0 }])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
    let from_mask = answer(
        &server,
        &request(
            "What is <region>?",
            json!([{"mask_png": png}]),
            json!({"temperature": 0}),
        ),
    );
    assert_eq!(from_alpha, from_mask);
    // An opaque RGB image carries no region: the question's placeholder has
    // none to stand for.
    let (status, reply) = post(
        &server,
        &request("What is <region>?", json!([]), json!({"temperature": 0})),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("alpha channel"));
}

/// `/metrics` counts requests by status and tokens, and a full queue is a
/// 429 with `Retry-After`.
#[test]
fn metrics_and_a_full_queue() {
    let server = serve(&["--queue", "1", "--max-batch", "1"]);
    let body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0, "max_tokens": 150, "ignore_eos": true}),
    );
    // Eight long requests at once: one runs, one waits, the rest are
    // turned away.
    let url = format!("{}/v1/chat/completions", server.url);
    let replies: Vec<(u16, Option<String>, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let response = reqwest::blocking::Client::new()
                        .post(&url)
                        .json(&body)
                        .send()
                        .unwrap();
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let status = response.status().as_u16();
                    (status, retry, response.json().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy = replies.iter().filter(|(status, ..)| *status == 429).count();
    let served = replies.iter().filter(|(status, ..)| *status == 200).count();
    let generated: u64 = replies
        .iter()
        .filter_map(|(_, _, reply)| reply["usage"]["completion_tokens"].as_u64())
        .sum();
    assert!(
        busy >= 1 && served >= 1 && busy + served == 8,
        "{replies:?}"
    );
    assert!(replies
        .iter()
        .filter(|(status, ..)| *status == 429)
        .all(|(_, retry, _)| retry.as_deref() == Some("1")));
    let text = server.metrics();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("rgpt_requests_total{status=\"200\"}"), served as f64);
    assert_eq!(value("rgpt_requests_total{status=\"429\"}"), busy as f64);
    assert!(generated > 0);
    assert_eq!(value("rgpt_generated_tokens_total"), generated as f64);
    assert_eq!(value("rgpt_queue_depth"), 0.0);
    assert_eq!(
        value("rgpt_time_to_first_token_seconds_count"),
        served as f64
    );
    assert_eq!(value("rgpt_request_seconds_count"), served as f64);
}

/// A streaming client that goes away stops its generation: the engine is
/// free again (`rgpt_batch_size 0`) long before the answer would have been
/// done, `rgpt_cancelled_total` counts it, and the next request is served.
#[test]
fn a_client_that_leaves_frees_the_engine() {
    let server = serve(&[]);
    let body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0, "max_tokens": 150, "ignore_eos": true, "stream": true}),
    );
    let mut response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&body)
        .send()
        .unwrap();
    // Read until the first generated text, then hang up.
    read_until_text(&mut response);
    drop(response);
    let started = std::time::Instant::now();
    loop {
        let text = server.metrics();
        if text.lines().any(|l| l == "rgpt_cancelled_total 1") {
            assert!(text.lines().any(|l| l == "rgpt_batch_size 0"), "{text}");
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "the generation was not cancelled:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    answer(
        &server,
        &request(
            "What is <region>?",
            json!([{"box": [5, 4, 25, 20]}]),
            json!({"temperature": 0}),
        ),
    );
}

/// `--api-key` guards the `/v1/` routes (OpenAI's 401 without it);
/// `/health` stays open.
#[test]
fn an_api_key_guards_the_api() {
    let server = serve(&["--api-key", "sesame"]);
    let client = reqwest::blocking::Client::new();
    let body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0}),
    );
    let url = format!("{}/v1/chat/completions", server.url);
    for key in [None, Some("Bearer wrong")] {
        let mut call = client.post(&url).json(&body);
        if let Some(key) = key {
            call = call.header("authorization", key);
        }
        let response = call.send().unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let reply: Value = response.json().unwrap();
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"));
    }
    let ok = client
        .post(&url)
        .header("authorization", "Bearer sesame")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let health = client.get(format!("{}/health", server.url)).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// A request past `--request-timeout` ends with a 504 (whole) or an error
/// before `[DONE]` (streamed). (A millisecond: no answer is ever that fast,
/// so both requests are late whatever the machine.)
#[test]
fn a_request_past_its_time_ends() {
    let server = serve(&["--request-timeout", "0.001"]);
    let body = |extra: Value| request("What is <region>?", json!([{"box": [5, 4, 25, 20]}]), extra);
    let (status, reply) = post(&server, &body(json!({"temperature": 0})));
    assert_eq!(status, 504, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--request-timeout"));
    let (data, text) = stream(&server, &body(json!({"temperature": 0, "stream": true})));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    assert!(data[data.len() - 2].contains("--request-timeout"), "{text}");
}

/// A LLaVA checkpoint (llava-hf and the original layout) is served as
/// `rgpt generate` answers it, greedy and sampled, whole and streamed.
#[test]
fn llava_checkpoints_answer_as_rgpt_generate() {
    for name in ["llava-tiny", "llava-original-tiny"] {
        let server = common::server::serve_model(name, &[]);
        let image = root().join("tests/fixtures/llava-tiny/image.png");
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&image).unwrap())
        );
        for (extra, flags) in [
            (json!({"temperature": 0}), vec![]),
            (
                json!({"temperature": 0.9, "top_p": 0.9, "seed": 4}),
                vec!["--temperature", "0.9", "--top-p", "0.9", "--seed", "4"],
            ),
        ] {
            let mut body = json!({
                "model": name,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ]}],
                "max_tokens": 6,
            });
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            let served = answer(&server, &body);
            body["stream"] = json!(true);
            let (data, _) = stream(&server, &body);
            let streamed: String = data[..data.len() - 1]
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(String::from)
                })
                .collect();
            let model = format!("tests/fixtures/{name}");
            let mut args = vec![
                "generate",
                "--model",
                &model,
                "--image",
                "tests/fixtures/llava-tiny/image.png",
                "--prompt",
                "What is in the picture?",
                "--max-new-tokens",
                "6",
                "--device",
                "cpu",
                "--json",
            ];
            args.extend(flags.iter());
            let report: Value = serde_json::from_str(&ok(&rgpt(&args))).unwrap();
            assert_eq!(served, report["text"].as_str().unwrap(), "{name} {extra}");
            assert_eq!(streamed, served, "{name} {extra}");
        }
    }
}

/// A follow-up turn about the same image finds it in the image cache (no
/// second run of the tower) and answers as a fresh server would.
#[test]
fn a_follow_up_turn_reuses_the_encoded_image() {
    let server = serve(&[]);
    let first = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0}),
    );
    let reply = answer(&server, &first);
    let mut follow_up = first.clone();
    follow_up["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": reply}),
        json!({"role": "user", "content": "And <region>?"}),
    ]);
    follow_up["regions"] = json!([{"box": [5, 4, 25, 20]}, {"box": [0, 0, 12, 12]}]);
    let cached = answer(&server, &follow_up);
    let text = server.metrics();
    assert!(
        text.lines().any(|l| l == "rgpt_images_encoded_total 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "rgpt_image_cache_hits_total 1"),
        "{text}"
    );
    let fresh = serve(&["--image-cache", "0"]);
    assert_eq!(answer(&fresh, &follow_up), cached);
}

/// A panic inside the engine fails the requests it touched with a 500 in
/// OpenAI's shape, and the engine goes on: a panic while a request joins
/// fails that request alone, the requests around it are answered; a panic
/// in a decode step fails every request in flight, whole or streamed, and
/// the next requests are answered as before.
#[test]
fn an_engine_panic_is_a_500_and_the_engine_recovers() {
    let server = serve(&["--test-panic-on", "BOOM-"]);
    let good = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0, "max_tokens": 40, "ignore_eos": true}),
    );
    let failing = |when: &str| {
        request(
            &format!("BOOM-{when} <region>"),
            json!([{"box": [5, 4, 25, 20]}]),
            json!({}),
        )
    };
    let want = answer(&server, &good);
    let url = format!("{}/v1/chat/completions", server.url);
    let send = |body: &Value| {
        let response = reqwest::blocking::Client::new()
            .post(&url)
            .json(body)
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let bad = failing("join");
    let replies: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&good, &bad, &good]
            .into_iter()
            .map(|body| {
                let send = &send;
                scope.spawn(move || send(body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(replies[1].0, 500, "{:?}", replies[1]);
    assert_eq!(
        replies[1].1["error"]["type"], "server_error",
        "{:?}",
        replies[1]
    );
    for (status, reply) in [&replies[0], &replies[2]] {
        assert_eq!(*status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], want.as_str());
    }

    // A long streamed answer in flight when a request comes whose first
    // shared decode step fails. Should the answer be done before that
    // request joins (it is then answered alone, 200), try again.
    use std::io::Read;
    let mut streamed = good.clone();
    streamed["stream"] = json!(true);
    streamed["max_tokens"] = json!(200);
    let mut overlapped = false;
    for _ in 0..5 {
        let mut response = reqwest::blocking::Client::new()
            .post(&url)
            .json(&streamed)
            .send()
            .unwrap();
        read_until_text(&mut response);
        let (status, reply) = send(&failing("step"));
        let mut rest = String::new();
        response.read_to_string(&mut rest).unwrap();
        assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
        if status == 200 {
            assert!(!rest.contains("\"error\""), "{rest}");
            continue;
        }
        assert_eq!(status, 500, "{reply}");
        assert!(
            rest.contains("the engine failed"),
            "{reply} / {}",
            &rest[rest.len().saturating_sub(700)..]
        );
        overlapped = true;
        break;
    }
    assert!(
        overlapped,
        "the failing request never shared a step with the stream"
    );
    assert_eq!(answer(&server, &good), want);
    let metrics = server.metrics();
    assert!(
        metrics.lines().any(|l| l == "rgpt_batch_size 0"),
        "{metrics}"
    );
}

/// Local files only with `--allow-local-files`; CORS headers only for the
/// origins `--cors-origin` names.
#[test]
fn local_files_and_cors_are_off_unless_asked_for() {
    let path = root().join("tests/fixtures/rgpt-tiny/image.png");
    let mut body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0}),
    );
    let by_data = body.clone();
    body["messages"][0]["content"][1]["image_url"]["url"] =
        json!(format!("file://{}", path.display()));

    let closed = serve(&[]);
    let (status, reply) = post(&closed, &body);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--allow-local-files"));
    let preflight = |server: &Server| {
        reqwest::blocking::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/chat/completions", server.url),
            )
            .header("Origin", "https://example.org")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(preflight(&closed), None);

    let open = serve(&[
        "--allow-local-files",
        "--cors-origin",
        "https://example.org",
    ]);
    assert_eq!(answer(&open, &body), answer(&open, &by_data));
    assert_eq!(preflight(&open).as_deref(), Some("https://example.org"));
    let out = rgpt(&[
        "serve",
        "--model",
        "tests/fixtures/rgpt-tiny",
        "--cors-origin",
        "example.org",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cors-origin"));
}

/// `logprobs` and `top_logprobs` in OpenAI's shape, whole and streamed:
/// one entry per generated token, each chosen token's log-probability
/// among its step's, and the top ones those `rgpt generate` reports.
#[test]
fn logprobs_in_openai_shape() {
    let server = serve(&[]);
    let body = request(
        "What is <region>?",
        json!([{"box": [5, 4, 25, 20]}]),
        json!({"temperature": 0, "logprobs": true, "top_logprobs": 3}),
    );
    let (status, reply) = post(&server, &body);
    assert_eq!(status, 200, "{reply}");
    let content = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        content.len() as u64,
        reply["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let report: Value = serde_json::from_str(&ok(&rgpt(&[
        "generate",
        "--model",
        "tests/fixtures/rgpt-tiny",
        "--image",
        "tests/fixtures/rgpt-tiny/image.png",
        "--prompt",
        "What is <region>?",
        "--region",
        "box:5,4,25,20",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--top-logprobs",
        "3",
        "--json",
    ])))
    .unwrap();
    let want = report["top_logprobs"].as_array().unwrap();
    assert_eq!(want.len(), content.len());
    for (entry, want) in content.iter().zip(want) {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{entry}");
        // Greedy: the chosen token is the most likely one.
        let chosen = entry["logprob"].as_f64().unwrap();
        assert!(
            (chosen - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6,
            "{entry}"
        );
        for (got, want) in top.iter().zip(want.as_array().unwrap()) {
            assert!(
                (got["logprob"].as_f64().unwrap() - want["logprob"].as_f64().unwrap()).abs() < 1e-4
            );
        }
        let token = entry["token"].as_str().unwrap();
        assert_eq!(entry["bytes"], json!(token.as_bytes()));
    }
    // Streamed, the chunks carry the same entries between them.
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (data, _) = stream(&server, &streamed_body);
    let streamed: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(&streamed, content);
    // Without `logprobs`, `null`; top_logprobs alone is refused.
    let (_, plain) = post(
        &server,
        &request(
            "What is <region>?",
            json!([{"box": [5, 4, 25, 20]}]),
            json!({"temperature": 0}),
        ),
    );
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
    let (status, refused) = post(
        &server,
        &request(
            "What is <region>?",
            json!([{"box": [5, 4, 25, 20]}]),
            json!({"top_logprobs": 2}),
        ),
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "top_logprobs");
}

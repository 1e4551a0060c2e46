//! `rgpt bench` on the CPU: decode, prefill and mask-pool reports in JSON,
//! with the bytes they are bounded by counted as the docs say, and clear
//! errors for a bad model, a bad shape and a run past the context.
mod common;

use common::{fails, ok, rgpt, root};
use serde_json::Value;

fn report(args: &[&str]) -> Value {
    serde_json::from_str(ok(&rgpt(args)).trim()).unwrap()
}

/// Bytes of tensor data in a safetensors file: all but its header.
fn safetensors_data_bytes(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes.len() as u64 - 8 - header
}

#[test]
fn decode_reports_its_bound_from_the_weights_and_cache_it_reads() {
    let decode = report(&[
        "bench",
        "decode",
        "--model",
        "tests/fixtures/llama-mha-tied",
        "--device",
        "cpu",
        "--prompt-tokens",
        "16",
        "--new-tokens",
        "8",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(decode["bench"], "decode");
    // A tied model's step reads every weight: all the checkpoint's bytes.
    let weights =
        safetensors_data_bytes(&root().join("tests/fixtures/llama-mha-tied/model.safetensors"));
    assert_eq!(decode["weight_bytes"].as_u64().unwrap(), weights);
    // 2 layers x 4 heads x 8 dims x keys and values x 4 bytes, over a mean
    // context of 16 + 8 / 2 tokens.
    assert_eq!(
        decode["kv_bytes_per_step"].as_u64().unwrap(),
        2 * 4 * 8 * 2 * 4 * 20
    );
    let tokens_per_s = decode["decode_tokens_per_s"].as_f64().unwrap();
    let bound = decode["bound_tokens_per_s"].as_f64().unwrap();
    assert!(tokens_per_s > 0.0 && bound > 0.0);
    let fraction = decode["bound_fraction"].as_f64().unwrap();
    assert!((fraction - tokens_per_s / bound).abs() < 1e-9);
    assert!(decode["bandwidth_bytes_per_s"].as_f64().unwrap() > 1e8);

    let prefill = report(&[
        "bench",
        "prefill",
        "--random-init",
        "tests/fixtures/llama-gqa-theta/config.json",
        "--device",
        "cpu",
        "--batch",
        "2",
        "--prompt-tokens",
        "32",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(prefill["bench"], "prefill");
    assert_eq!(prefill["batch"], 2);
    let ms = prefill["prefill_ms"].as_f64().unwrap();
    let rate = prefill["prefill_tokens_per_s"].as_f64().unwrap();
    assert!((rate - 64.0 / (ms / 1e3)).abs() / rate < 1e-6);
}

#[test]
fn mask_pool_reports_the_bytes_it_must_move() {
    let pool = report(&[
        "bench",
        "mask-pool",
        "--device",
        "cpu",
        "--channels",
        "64",
        "--grid",
        "24",
        "--regions",
        "4",
        "--batch",
        "2",
        "--runs",
        "3",
        "--json",
    ]);
    // Features (f32), masks (f32) and the pooled vectors.
    let bytes = 2 * 64 * 24 * 24 * 4 + 8 * 24 * 24 * 4 + 8 * 64 * 4;
    assert_eq!(pool["bytes"].as_u64().unwrap(), bytes);
    let ms = pool["ms"].as_f64().unwrap();
    let bound = pool["bound_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && bound > 0.0);
    assert!((pool["bound_fraction"].as_f64().unwrap() - bound / ms).abs() < 1e-9);
}

#[test]
fn bad_bench_requests_say_what_to_fix() {
    fails(
        &[
            "bench",
            "decode",
            "--random-init",
            "llama-9000",
            "--device",
            "cpu",
        ],
        "not one of llama-7b, llama-1b",
    );
    fails(&["bench", "decode", "--device", "cpu"], "--random-init");
    fails(
        &[
            "bench",
            "decode",
            "--model",
            "tests/fixtures/llama-mha-tied",
            "--device",
            "cpu",
            "--prompt-tokens",
            "250",
            "--new-tokens",
            "10",
        ],
        "over the model's 256 positions",
    );
}

/// e2e on the RGPT fixture (its tokenizer templates the question) and on
/// random weights of the fixture's config (a synthetic prompt): three
/// regions, the tokens asked for, the first token before the last.
#[test]
fn e2e_times_the_first_token_and_the_rest() {
    for source in [
        ["--model", "tests/fixtures/rgpt-tiny"],
        ["--random-init", "tests/fixtures/rgpt-tiny/config.json"],
    ] {
        let mut args = vec![
            "bench",
            "e2e",
            "--device",
            "cpu",
            "--new-tokens",
            "12",
            "--runs",
            "1",
        ];
        args.extend(source);
        args.extend(["--image-size", "64", "--json"]);
        let e2e = report(&args);
        assert_eq!(e2e["bench"], "e2e", "{e2e}");
        assert_eq!(e2e["regions"], 3);
        assert_eq!(e2e["new_tokens"], 12);
        assert!(e2e["prompt_ids"].as_u64().unwrap() > 20, "{e2e}");
        let (ttft, total) = (
            e2e["ttft_ms"].as_f64().unwrap(),
            e2e["total_ms"].as_f64().unwrap(),
        );
        assert!(ttft > 0.0 && ttft < total, "{e2e}");
        assert!(e2e["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    // A LLaVA checkpoint has no region token: e2e says so.
    fails(
        &[
            "bench",
            "e2e",
            "--model",
            "tests/fixtures/llava-tiny",
            "--device",
            "cpu",
        ],
        "no `<region>` token",
    );
}

//! Asks `rgpt serve` about a region of an image, streaming the answer:
//!
//! ```sh
//! rgpt serve --model DIR --port 8080 &
//! cargo run -p rgpt-serve --example chat_client -- \
//!     http://127.0.0.1:8080 photo.jpg 40,60,200,220 "What is in <region>?"
//! ```
//!
//! The request is OpenAI's chat completion with this server's `regions`
//! extension; any OpenAI client can send it the same way.
use std::io::{BufRead, BufReader, Write};

use base64::Engine as _;
use serde_json::{json, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, image, region, question] = args.as_slice() else {
        return Err("usage: chat_client SERVER IMAGE X1,Y1,X2,Y2 QUESTION".into());
    };
    let corners: Vec<f64> = region
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the region is x1,y1,x2,y2: {e}"))?;
    let bytes = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
    let kind = if image.ends_with(".png") {
        "png"
    } else {
        "jpeg"
    };
    let url = format!(
        "data:image/{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let body = json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
        "regions": [{"box": corners}],
        "temperature": 0,
        "stream": true,
    });
    let response = reqwest::blocking::Client::new()
        .post(format!("{server}/v1/chat/completions"))
        .json(&body)
        .send()?;
    if !response.status().is_success() {
        let error: Value = response.json()?;
        let message = error["error"]["message"]
            .as_str()
            .unwrap_or("the server refused");
        return Err(message.into());
    }
    // Server-sent events: one `data: {chunk}` line per piece of text.
    let mut out = std::io::stdout();
    for line in BufReader::new(response).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)?;
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    println!();
    Ok(())
}

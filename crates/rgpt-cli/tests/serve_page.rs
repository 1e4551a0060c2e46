//! The page `rgpt serve` shows at `/`, in headless Chromium driven through
//! chromedriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup.sh` installs): it uploads an image, draws a box, a
//! polygon and a free-hand mask, asks about them with the region buttons
//! and the keyboard alone, sees the answers stream in, and leaves a
//! screenshot at `target/tmp/serve-page.png`. The request the page sent is
//! checked (regions in image pixels, in placeholder order), and the server
//! gives the same answer to it sent whole.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::server::serve;
use fantoccini::actions::{InputSource as _, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, once it answers.
fn chromedriver() -> (Driver, String) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver ({e}): scripts/setup.sh installs chromium-driver")
        });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::blocking::get(format!("{url}/status")).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Driver(child), url)
}

/// A 320x240 picture with a red square, a blue disc and a green band.
fn picture(path: &std::path::Path) {
    let image = image::RgbImage::from_fn(320, 240, |x, y| {
        let (dx, dy) = (x as f64 - 230.0, y as f64 - 80.0);
        if (40..130).contains(&x) && (50..140).contains(&y) {
            image::Rgb([210, 40, 40])
        } else if dx * dx + dy * dy < 45.0 * 45.0 {
            image::Rgb([40, 70, 200])
        } else if y > 190 {
            image::Rgb([50, 160, 60])
        } else {
            image::Rgb([235, 232, 220])
        }
    });
    image.save(path).unwrap();
}

/// Left-button drag (or click, for an empty path) through `points`, given
/// as offsets in CSS pixels from the canvas's top-left corner.
async fn drag(client: &Client, points: &[(f64, f64)]) {
    let canvas = client.find(Locator::Id("canvas")).await.unwrap();
    let (_, _, width, height) = canvas.rectangle().await.unwrap();
    let at = |(x, y): (f64, f64)| PointerAction::MoveToElement {
        element: canvas.clone(),
        duration: Some(Duration::from_millis(30)),
        x: x - width / 2.0,
        y: y - height / 2.0,
    };
    let mut mouse =
        MouseActions::new("mouse".into())
            .then(at(points[0]))
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            });
    for &point in &points[1..] {
        mouse = mouse.then(at(point));
    }
    mouse = mouse.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    client.perform_actions(mouse).await.unwrap();
}

/// Waits until the script expression `condition` holds in the page.
async fn until(client: &Client, condition: &str) {
    let started = Instant::now();
    while client
        .execute(&format!("return Boolean({condition})"), vec![])
        .await
        .unwrap()
        != json!(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never: {condition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click_css(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of the `n`th finished answer, once it has streamed in.
async fn answer(client: &Client, n: usize) -> String {
    let started = Instant::now();
    loop {
        let done = client
            .find_all(Locator::Css(".message.assistant[data-done=true]"))
            .await
            .unwrap();
        if done.len() >= n {
            return done[n - 1].text().await.unwrap();
        }
        let errors = client
            .find_all(Locator::Css(".message.error"))
            .await
            .unwrap();
        if let Some(error) = errors.first() {
            panic!("the page shows an error: {}", error.text().await.unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no answer {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_page(
    server_url: &str,
    driver_url: &str,
    picture: &std::path::Path,
) -> (Value, Vec<String>) {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(driver_url)
        .await
        .expect("cannot open a Chromium session through chromedriver");
    client.goto(server_url).await.unwrap();
    until(
        &client,
        "document.getElementById('model').textContent === 'rgpt-tiny'",
    )
    .await;
    // The tiny model reads 256 positions: keep the answers short.
    let tokens = client.find(Locator::Id("max-tokens")).await.unwrap();
    tokens.clear().await.unwrap();
    tokens.send_keys("12").await.unwrap();

    // Upload, then draw: a box (region 1), a polygon (2), a mask (3). The
    // canvas shows the 320x240 picture at its own size or larger.
    client
        .find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(&picture.display().to_string())
        .await
        .unwrap();
    until(&client, "window.rgpt.image !== null").await;
    let scale = client
        .execute("return window.rgpt.scale", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    let px = |x: f64, y: f64| (x * scale, y * scale);
    drag(
        &client,
        &[px(40.0, 50.0), px(90.0, 100.0), px(130.0, 140.0)],
    )
    .await;
    click_css(&client, "#tools [data-tool=polygon]").await;
    for corner in [
        px(190.0, 40.0),
        px(275.0, 45.0),
        px(265.0, 125.0),
        px(190.0, 40.0),
    ] {
        drag(&client, &[corner]).await;
    }
    click_css(&client, "#tools [data-tool=brush]").await;
    drag(
        &client,
        &[px(20.0, 215.0), px(150.0, 212.0), px(300.0, 218.0)],
    )
    .await;
    let kinds = client
        .execute("return window.rgpt.regions.map(r => r.kind)", vec![])
        .await
        .unwrap();
    assert_eq!(kinds, json!(["box", "polygon", "mask"]));

    // First question: typed, with regions put in by their buttons, sent
    // with Enter.
    let message = client.find(Locator::Id("message")).await.unwrap();
    message.send_keys("What is ").await.unwrap();
    click_css(&client, "[data-insert='1']").await;
    message.send_keys(" next to ").await.unwrap();
    click_css(&client, "[data-insert='2']").await;
    message.send_keys("?\u{E007}").await.unwrap();
    let first = answer(&client, 1).await;

    // Second question with the keyboard alone: focus the message box,
    // Alt+3 puts in region 3, Enter sends.
    client
        .execute("document.activeElement.blur(); return null", vec![])
        .await
        .unwrap();
    let mut keys = String::new();
    keys.push_str("And ");
    message.send_keys(&keys).await.unwrap();
    message.send_keys("\u{E00A}3\u{E00A}").await.unwrap(); // Alt down, 3, Alt up
    message.send_keys("?\u{E007}").await.unwrap();
    let second = answer(&client, 2).await;

    // A `Region [k]` in an answer lights up the k-th region of the talk.
    let lit = client
        .execute(
            "const d = document.createElement('div'); renderAnswer(d, 'It is Region [2].'); \
             return [...window.rgpt.highlighted]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        lit,
        json!([2]),
        "Region [2] is the polygon, the talk's second region"
    );

    let request = client
        .execute("return window.rgpt.lastRequest", vec![])
        .await
        .unwrap();
    // The answers as the page keeps them for the next turn (the DOM's text
    // is whitespace-normalised by WebDriver).
    let kept = client
        .execute(
            "return window.rgpt.messages.filter(m => m.role === 'assistant').map(m => m.content)",
            vec![],
        )
        .await
        .unwrap();
    let kept: Vec<String> = serde_json::from_value(kept).unwrap();
    assert_eq!(kept.len(), 2);
    for (shown, kept) in [first, second].iter().zip(&kept) {
        assert_eq!(shown.trim(), kept.trim(), "the page shows what it keeps");
    }
    let shot = client.screenshot().await.unwrap();
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png"),
        shot,
    )
    .unwrap();
    client.close().await.unwrap();
    (request, kept)
}

#[test]
fn the_page_draws_regions_and_streams_answers() {
    let server = serve(&[]);
    let (_driver, driver_url) = chromedriver();
    let picture_path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page-input.png");
    picture(&picture_path);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (request, answers) = runtime.block_on(run_page(&server.url, &driver_url, &picture_path));

    // The page sent both turns: the first with the image, the regions in
    // placeholder order and in image pixels.
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{request}");
    assert_eq!(
        messages[0]["content"][0]["text"],
        "What is <region> next to <region>?"
    );
    assert_eq!(messages[1]["content"], answers[0].as_str());
    assert_eq!(messages[2]["content"], "And <region>?");
    assert_eq!(request["stream"], true);
    let regions = request["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3, "{request}");
    let near = |got: &Value, want: &[f64]| {
        let got: Vec<f64> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1.5),
            "{got:?} is not {want:?} to a pixel"
        );
    };
    near(&regions[0]["box"], &[40.0, 50.0, 130.0, 140.0]);
    near(
        &regions[1]["polygon"][0],
        &[190.0, 40.0, 275.0, 45.0, 265.0, 125.0],
    );
    let mask = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        regions[2]["mask_png"].as_str().unwrap(),
    )
    .unwrap();
    let mask = image::load_from_memory(&mask).unwrap().to_luma8();
    assert_eq!(
        mask.dimensions(),
        (320, 240),
        "the mask has the image's size"
    );
    assert!(mask.get_pixel(150, 214).0[0] > 0 && mask.get_pixel(150, 100).0[0] == 0);

    // What streamed into the page is the server's answer to that request.
    for (turn, streamed) in answers.iter().enumerate() {
        let mut whole = request.clone();
        whole["stream"] = json!(false);
        let messages = &request["messages"].as_array().unwrap()[..1 + 2 * turn];
        whole["messages"] = json!(messages);
        whole["regions"] = json!(regions[..if turn == 0 { 2 } else { 3 }]);
        let reply: Value = reqwest::blocking::Client::new()
            .post(format!("{}/v1/chat/completions", server.url))
            .json(&whole)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            reply["choices"][0]["message"]["content"].as_str(),
            Some(streamed.as_str()),
            "turn {turn}: {reply}"
        );
    }
}

//! `rgpt serve` on a free loopback port, for the server's tests.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::root;

/// A running `rgpt serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// `GET /metrics`'s text.
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.url))
            .unwrap()
            .text()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rgpt serve` on the RGPT fixture on a free loopback port, once it
/// listens.
pub fn serve(extra: &[&str]) -> Server {
    serve_model("rgpt-tiny", extra)
}

/// `rgpt serve` on the fixture `tests/fixtures/NAME`, served as NAME.
pub fn serve_model(name: &str, extra: &[&str]) -> Server {
    let model = format!("tests/fixtures/{name}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .current_dir(root())
        .args(["serve", "--model", &model, "--port", "0"])
        .args(["--device", "cpu", "--model-name", name])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

//! `rgpt`: the RGPT-rs command line.
fn main() {}

#!/usr/bin/env bash
# The whole test suite: libtorch setup, formatting, lints, then every test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The CUDA kernels: built with the `cuda` feature, and every kernel source
# compiled by NVRTC to PTX for compute_80 and compute_90 (no GPU needed).
cargo clippy -p rgpt-region --features cuda --all-targets -- -D warnings
cargo test -p rgpt-region --features cuda --test cuda_kernels
# Crates that stand alone: the region geometry and the metrics build, lint and
# pass their tests without their default features, and then pull in neither
# libtorch nor a model crate (docs/architecture.md).
for crate in rgpt-region rgpt-eval; do
  if cargo tree -p "$crate" --no-default-features -e normal --prefix none |
    grep -E '^(torch-sys|tch|rgpt-(model|vision|llm|connector|weights|data)) '; then
    echo "$crate without default features depends on the crates above" >&2
    exit 1
  fi
  cargo clippy -p "$crate" --no-default-features --all-targets -- -D warnings
  cargo test -p "$crate" --no-default-features
done

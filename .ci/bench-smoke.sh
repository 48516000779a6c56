#!/usr/bin/env bash
# Benchmark smoke run (about 1 minute of measuring after the release build; installs h2load from
# Debian nghttp2-client when missing): every phase of
# `cargo bench --bench gateway` at a small size. The goals it prints (MET / NOT MET) are
# informational; it fails only when something is functionally wrong: a call failed, a sampled
# `x-cache` was not what the phase expects, or a burst of identical cold reads made other than
# exactly one upstream request. `.ci/run` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked --bench gateway -- --quick "$@"

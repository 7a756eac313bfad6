#!/usr/bin/env bash
# Runs every test: installs what the build needs, then the XCTest suites in a
# release build (the model tests run real checkpoints and are slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift test -c release "$@"

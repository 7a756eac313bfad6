#!/usr/bin/env bash
# Installs the Debian packages rwkvx builds and tests with. Idempotent: packages
# already present are left alone, and apt-get runs only when one is missing.
set -euo pipefail

packages=(libzmq3-dev libprotobuf-c-dev protobuf-c-compiler iproute2)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
    for dir in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
        if [ -x "$dir/swift" ]; then export PATH="$dir:$PATH"; fi
    done
fi
command -v swift >/dev/null || { echo "setup: swift not found; install the Swift 6.3 toolchain and put it on PATH" >&2; exit 1; }

#!/bin/sh
# Regenerate the protoc-c output of proto/rwkvx.proto into Sources/RWKVXProto.
#
# Usage: scripts/gen-proto.sh [OUTPUT_DIR]
# Without OUTPUT_DIR it writes rwkvx.pb-c.c to Sources/RWKVXProto and
# rwkvx.pb-c.h to Sources/RWKVXProto/include, the layout SwiftPM compiles.
# With OUTPUT_DIR it writes both files there (used by the staleness test).
# Running it twice gives identical files.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v protoc-c >/dev/null 2>&1; then
    echo "gen-proto.sh: protoc-c not found; install protobuf-c-compiler" >&2
    exit 127
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

protoc-c --proto_path="$root/proto" --c_out="$work" "$root/proto/rwkvx.proto"

if [ $# -ge 1 ]; then
    mkdir -p "$1"
    cp "$work/rwkvx.pb-c.c" "$work/rwkvx.pb-c.h" "$1/"
else
    cp "$work/rwkvx.pb-c.c" "$root/Sources/RWKVXProto/rwkvx.pb-c.c"
    cp "$work/rwkvx.pb-c.h" "$root/Sources/RWKVXProto/include/rwkvx.pb-c.h"
fi

#!/usr/bin/env bash
# The main job: start a local multi-process cluster (a coordinator and two
# pipeline-stage workers on 127.0.0.1) and generate text through it.
#
#   scripts/demo.sh [MODEL] [PROMPT]
#
# MODEL defaults to a random 0.2B RWKV-X checkpoint (12 RWKV-7 + 4 sparse-attention
# layers, n_embd 768, vocab 65536) made once in models/. Random weights generate
# noise, not text: pass a real checkpoint (.pth or .safetensors) for real text.
# Environment: WORKERS (default 2), MAX_TOKENS (default 100), RUN_DIR, BASE_PORT.
# Idempotent: it reuses the built binary and the checkpoint, and stops a cluster
# left over from an earlier run of this script first.
set -euo pipefail
# A MODEL given relative to the caller's directory must survive the cd below.
given_model="${1:-}"
if [ -n "$given_model" ] && [ "${given_model#/}" = "$given_model" ]; then
    given_model="$PWD/$given_model"
fi
cd "$(dirname "$0")/.."

if [ -n "$given_model" ] && [ ! -f "$given_model" ]; then
    echo "demo: model $given_model not found; pass a .pth or .safetensors checkpoint, or no argument for a random one" >&2
    exit 1
fi
source scripts/setup.sh

model="${given_model:-models/rwkvx-random-0.2b.pth}"
prompt="${2:-The RWKV-X architecture combines recurrent blocks with sparse attention because}"
workers="${WORKERS:-2}"
max_tokens="${MAX_TOKENS:-100}"
run_dir="${RUN_DIR:-.rwkvx-cluster}"
base_port="${BASE_PORT:-5700}"

echo "== building rwkvx (release)" >&2
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/rwkvx"

if [ ! -f "$model" ]; then
    echo "== no model given: writing a RANDOM checkpoint to $model (it will generate noise, not text)" >&2
    mkdir -p "$(dirname "$model")"
    "$bin" init-checkpoint --layers 12 --sparse-layers 4 --embd 768 --vocab 65536 --dtype bf16 --seed 1 --out "$model"
fi

if [ -f "$run_dir/cluster.json" ]; then
    echo "== stopping the cluster left in $run_dir" >&2
    "$bin" cluster down --run-dir "$run_dir" || true
fi

cores=$(nproc)
threads=$(( cores / workers > 0 ? cores / workers : 1 ))
echo "== starting $workers workers ($threads thread(s) each) and a coordinator" >&2
"$bin" cluster up --workers "$workers" --threads "$threads" --model "$model" --run-dir "$run_dir" --base-port "$base_port"
trap '"$bin" cluster down --run-dir "$run_dir" >&2 || true' EXIT

echo "== generating $max_tokens tokens through the cluster" >&2
"$bin" generate --coordinator "tcp://127.0.0.1:$base_port" --prompt "$prompt" --max-tokens "$max_tokens" --seed 7

echo "== cluster after the run" >&2
"$bin" cluster status --run-dir "$run_dir"

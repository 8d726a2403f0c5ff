#!/usr/bin/env bash
# Runs the Autobahn TestSuite's fuzzingclient against the service's websocket
# endpoint and judges the report. CI runs it through tests/autobahn.rs:
#
#   cargo test --release --features echo --test autobahn
#
# or by hand, on a binary built with the `echo` feature (every message sent
# back, so that the suite judges the data path too):
#
#   tests/autobahn/run.sh target/release/rust-web-prometheus-example
#
# Starts the given service binary on a free loopback port, with messages of
# up to 16 MiB, runs every case but 12.x/13.x (compression, which the
# service does not offer) and 9.7.x/9.8.x (round-trip timing: 60-480 s
# each, 34 min in all), stops the service and prints summarize.py's
# judgement; exits non-zero if a case fails it. About a minute; the
# verdicts are in docs/websockets.md.
#
# Needs pyenv's Python 2.7 (the test suite is Python 2 code), found at
# $PYTHON2 (default ~/.pyenv/versions/2.7.18/bin/python), and python3. The
# virtualenv with the pinned packages of requirements.txt is made from PyPI
# on first use (a few minutes) in $AUTOBAHN_VENV (default
# ~/.cache/autobahn-venv), and made again when requirements.txt changes. The
# report goes to $AUTOBAHN_OUT (default target/autobahn-report); the
# service's log is service.log in it. $AUTOBAHN_CASES and $AUTOBAHN_EXCLUDE
# (JSON lists) choose other cases.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:?usage: $0 path/to/rust-web-prometheus-example}")
python2=${PYTHON2:-$HOME/.pyenv/versions/2.7.18/bin/python}
venv=${AUTOBAHN_VENV:-$HOME/.cache/autobahn-venv}
out=$(realpath -m "${AUTOBAHN_OUT:-target/autobahn-report}")
cases=${AUTOBAHN_CASES:-'["*"]'}
exclude=${AUTOBAHN_EXCLUDE:-'["9.7.*", "9.8.*", "12.*", "13.*"]'}
[ -x "$python2" ] || {
    echo "no Python 2.7 at $python2: pyenv install 2.7.18, or set PYTHON2" >&2
    exit 1
}

# The virtualenv: made with a virtualenv that still supports Python 2.7,
# itself installed into a scratch directory and removed afterwards.
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    export PIP_NO_PYTHON_VERSION_WARNING=1
    rm -rf "$venv"
    boot=$(mktemp -d)
    "$python2" -m pip install -q --target "$boot" virtualenv==20.15.1
    PYTHONPATH=$boot "$python2" -m virtualenv -q "$venv"
    rm -rf "$boot"
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
    "$venv/bin/pip" check >/dev/null
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi

mkdir -p "$out"
# 16 MiB messages: the largest the suite sends (9.1.6, 9.2.6).
LISTEN_ADDR=127.0.0.1:0 COLLECT_INTERVAL_MS=0 RUST_LOG=${RUST_LOG:-warn} \
    WS_MAX_MESSAGE_BYTES=$((16 << 20)) \
    "$bin" >"$out/service.log" 2>&1 &
service=$!
trap 'kill "$service" 2>/dev/null || true' EXIT
port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*Started on port \([0-9]*\).*/\1/p' "$out/service.log")
    [ -n "$port" ] && break
    kill -0 "$service" 2>/dev/null || { cat "$out/service.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "service did not start" >&2; exit 1; }

cat >"$out/fuzzingclient.json" <<EOF
{
  "outdir": "$out",
  "servers": [{"agent": "service", "url": "ws://127.0.0.1:$port/ws/autobahn"}],
  "cases": $cases,
  "exclude-cases": $exclude,
  "exclude-agent-cases": {}
}
EOF
start=$SECONDS
(cd "$out" && "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1) \
    || { tail -20 "$out/wstest.log" >&2; exit 1; }
echo "fuzzingclient took $((SECONDS - start)) s against port $port"

kill -TERM "$service" && wait "$service" || true
trap - EXIT
python3 "$here/summarize.py" "$out"

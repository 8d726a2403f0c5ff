#!/usr/bin/env bash
# Draws the tutorial's two graphs from a real Prometheus scraping the real
# service: builds the release binary, starts it on loopback with its
# simulated data collector (on by default), starts Prometheus on a
# temporary configuration that scrapes it every 5 s as the tutorial's does,
# lets it gather for GATHER_SECS (default 360), checks that both queries
# return what the graphs must show, and screenshots Prometheus's own graph
# page for each query with headless Chromium:
#   docs/images/tutorial-p90.png             the 90th percentile of response_time
#   docs/images/tutorial-response-codes.png  the response codes by class
# Then it rewrites the "Made by" lines under the images in docs/tutorial.md
# with the date and the versions used.
#
# Needs Debian's `prometheus` (its package ships the classic web UI) and
# `chromium`: apt-get update && apt-get install -y prometheus chromium.
# Everything listens on 127.0.0.1 only, lives in a temporary directory and
# is stopped and removed at the end, even on failure. Takes GATHER_SECS plus
# the release build and about 20 s: 9 to 10 min in all on a busy 2-core
# machine, after a new commit (the binary embeds the revision, so the crate
# is compiled again; its dependencies were built).
# CI does not run it: the images are committed, made by hand.
# Usage: docs/images/make.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# The tutorial's queries, as it prints them.
p90_query='histogram_quantile(0.90, sum(rate(response_time_bucket{env="testing"}[2m])) by (le))'
codes_query='sum(increase(response_code{env="testing"}[5m])) by (type)'

gather_secs=${GATHER_SECS:-360}
if ! [[ $gather_secs =~ ^[0-9]+$ ]] || ((gather_secs < 60 || gather_secs > 3600)); then
  echo "make.sh: GATHER_SECS must be a number of seconds from 60 to 3600, not '$gather_secs'" >&2
  exit 2
fi

say() { printf 'make.sh: %s\n' "$*"; }
fail() { say "FAILED: $*" >&2; exit 1; }

for tool in prometheus chromium curl ss; do
  command -v "$tool" >/dev/null ||
    fail "no $tool; on Debian: apt-get update && apt-get install -y prometheus chromium curl iproute2"
done

work=$(mktemp -d /tmp/tutorial-graphs.XXXXXX)
service_pid=""
prometheus_pid=""
sleep_pid=""
# Stops what the script started, SIGTERM first, SIGKILL after 10 s.
stop() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$sleep_pid"
  stop "$prometheus_pid"
  stop "$service_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Percent-encodes a query for a URL.
urlencode() {
  local text=$1 out="" char i
  for ((i = 0; i < ${#text}; i++)); do
    char=${text:i:1}
    case $char in
      [A-Za-z0-9._~-]) out+=$char ;;
      *) out+=$(printf '%%%02X' "'$char") ;;
    esac
  done
  printf '%s' "$out"
}

# The port a process of ours listens on, waiting for it at most 30 s.
listening_port() {
  local pid=$1 port=""
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || return 1
    port=$(ss -Hltnp | grep "pid=$pid," | grep -o '127\.0\.0\.1:[0-9]*' | head -1 | cut -d: -f2)
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.1
  done
  return 1
}

revision=$(git rev-parse --short HEAD)
# The images say which code made them: a build with uncommitted changes to
# the service is marked.
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock build.rs)" ]; then
  revision="$revision with uncommitted changes"
fi

say "building the release binary"
timeout 1800 cargo build --release --quiet --bin rust-web-prometheus-example
binary="${CARGO_TARGET_DIR:-target}/release/rust-web-prometheus-example"

say "starting the service on 127.0.0.1"
LISTEN_ADDR=127.0.0.1:0 "$binary" >"$work/service.log" 2>&1 &
service_pid=$!
service_port=""
for _ in $(seq 300); do
  service_port=$(grep -o 'Started on port [0-9]*' "$work/service.log" | grep -o '[0-9]*$' || true)
  [ -n "$service_port" ] && break
  kill -0 "$service_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$service_port" ] || { cat "$work/service.log" >&2; fail "the service did not start"; }

say "starting Prometheus, scraping 127.0.0.1:$service_port every 5 s"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: service-collector
    static_configs:
      - targets: ["127.0.0.1:$service_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address=127.0.0.1:0 >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
prometheus_port=$(listening_port "$prometheus_pid") ||
  { tail -20 "$work/prometheus.log" >&2; fail "Prometheus did not start"; }
api="http://127.0.0.1:$prometheus_port/api/v1"

say "gathering for $gather_secs s"
# In the background, so that a signal stops the script at once, not after.
sleep "$gather_secs" &
sleep_pid=$!
wait "$sleep_pid"
kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; fail "the service died"; }
curl -sf "$api/query?query=$(urlencode 'up{job="service-collector"}')" | grep -q '"value":\[[0-9.]*,"1"\]' ||
  fail "Prometheus does not see the service up"

# The graphs must show what the tutorial's do: one p90 line, and one line
# for each of the five classes.
p90=$(curl -sf "$api/query?query=$(urlencode "$p90_query")")
[ "$(grep -o '"value":\[' <<<"$p90" | wc -l)" = 1 ] || fail "the p90 query returned $p90"
codes=$(curl -sf "$api/query?query=$(urlencode "$codes_query")")
classes=$(grep -o '"type":"[1-5]00"' <<<"$codes" | sort -u | wc -l)
[ "$classes" = 5 ] || fail "the response code query returned $classes classes, not 5: $codes"

# Prometheus's graph page for one query over the gathering, as a PNG.
graph_range="$(( (gather_secs + 59) / 60 ))m"
screenshot() {
  local query=$1 image=$2 profile
  profile=$(mktemp -d "$work/chromium.XXXXXX")
  TZ=UTC timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update \
    --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1200,870 --virtual-time-budget=10000 --screenshot="$image" \
    "http://127.0.0.1:$prometheus_port/classic/graph?g0.expr=$(urlencode "$query")&g0.tab=0&g0.range_input=$graph_range" \
    >"$work/chromium.log" 2>&1 || { tail -20 "$work/chromium.log" >&2; fail "chromium"; }
  [ -s "$image" ] || fail "chromium wrote no $image"
  say "wrote $image ($(($(stat -c %s "$image") / 1024)) KiB)"
}
screenshot "$p90_query" docs/images/tutorial-p90.png
screenshot "$codes_query" docs/images/tutorial-response-codes.png

prometheus_version=$(prometheus --version 2>&1 | head -1 | awk '{print $3}')
chromium_version=$(chromium --version 2>/dev/null | awk '{print $2}')
made_by="*Made by \`docs/images/make.sh\` on $(date -u +%Y-%m-%d): service revision $revision,\
 Prometheus $prometheus_version (Debian's package, its classic web UI), headless Chromium\
 $chromium_version; $gather_secs s of data scraped every 5 s.*"
# shellcheck disable=SC2016 # the backquotes are Markdown's
if grep -q '^\*Made by `docs/images/make.sh`' docs/tutorial.md; then
  made_by_sed=${made_by//&/\\&}
  sed -i "s|^\*Made by \`docs/images/make.sh\`.*|${made_by_sed//|/\\|}|" docs/tutorial.md
  say "updated the lines under the images in docs/tutorial.md"
else
  say "docs/tutorial.md has no 'Made by' line to update; the line is:"
  printf '%s\n' "$made_by"
fi

#!/usr/bin/env bash
# Builds the service's image from the root Dockerfile with Podman and runs
# it: /healthz and /metrics answer and the process is not root. Then the
# image of prom/ runs twice: as compose.yaml runs it, on a container
# network, scraping the service by its name, service:8080; and as the
# tutorial runs it, on the host's network with its default configuration,
# scraping localhost:8080, where the tutorial's queries then have answers.
# Last, `podman stop` (the image's STOPSIGNAL) turns /readyz to 503 while
# /some is still served, then the container exits 0.
#
# No image registry is reachable where this runs, so the base images are
# stand-ins made from Debian's packages and tagged with the names the
# Dockerfiles use:
#   rust:1.95-bookworm           a debootstrapped bookworm with gcc, this
#                                machine's Rust toolchain and CA certificates
#   distroless/cc-debian12       the same bookworm (it holds glibc and libgcc)
#   prom/prometheus:v3.13.1      the same bookworm with Debian's prometheus
#                                binary (2.42) and the real image's entrypoint
# So this proves the Dockerfiles, compose.yaml's wiring and the service in a
# container, not the real base images, and nothing about Grafana.
#
# Everything lives in a temporary directory with an image store of its own,
# removed at the end. Needs root and Debian's podman, runc, debootstrap and
# the CNI dnsname plugin (.ci/run installs them) and reaches Debian's mirror
# and crates.io. Takes about 8 minutes, most of it the release build.
# Usage: deploy/podman-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /var/tmp/podman-smoke.XXXXXX)
network="podman-smoke-$$"
# crun cannot run containers on this kind of machine's hybrid cgroups; runc
# can. default_ulimits: the machine's default nofile ulimit is more than a
# container may be given.
printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
# Buildah keeps the Dockerfile's cache mounts under TMPDIR: here, so that
# nothing outlives the run and every run builds from scratch, as CI does.
export TMPDIR="$work"
store=(--root "$work/storage" --runroot "$work/run")
podman() { command podman "${store[@]}" "$@"; }

cleanup() {
  podman rm --force --all >/dev/null 2>&1 || true
  podman network rm --force "$network" >/dev/null 2>&1 || true
  podman system reset --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf 'podman-smoke: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

# Polls `curl URL` until its HTTP status is $2; at most 30 s.
wait_for_status() {
  local url=$1 wanted=$2 status=""
  for _ in $(seq 300); do
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [ "$status" = "$wanted" ] && return 0
    sleep 0.1
  done
  fail "$url answered ${status:-nothing}, not $wanted"
}

# Runs the command given until it succeeds, at most $1 seconds.
retry_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# The answer of the Prometheus at $1 to the PromQL query $2: JSON.
query() {
  curl -s --max-time 2 -G --data-urlencode "query=$2" "http://$1/api/v1/query" || true
}

# Whether that answer matches the extended regular expression $3.
answers() { query "$1" "$2" | grep -Eq "$3"; }

# Whether the answer to $2 holds a series for each status class, 100 to 500.
has_every_class() {
  [ "$(query "$1" "$2" | grep -Eo '"type":"[1-5]00"' | sort -u | wc -l)" = 5 ]
}

say "making a Debian bookworm root"
debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev \
  bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
tar -C "$work/rootfs" -c . | podman import --quiet - localhost/smoke-bookworm >/dev/null
rm -rf "$work/rootfs"

say "making the stand-in base images"
mkdir -p "$work/rust" "$work/prom"
tar -C "$(rustc --print sysroot)" --exclude=./share/doc -c . | tar -C "$work/rust" -x
# The builder trusts what this machine trusts, so cargo reaches crates.io
# inside it as it does outside.
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$work/ca-certificates.crt"
cat >"$work/Containerfile.rust" <<'EOF'
FROM localhost/smoke-bookworm
COPY rust /usr/local/rust
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
EOF
podman build --quiet --pull=never -f "$work/Containerfile.rust" \
  -t docker.io/library/rust:1.95-bookworm "$work" >/dev/null
podman tag localhost/smoke-bookworm gcr.io/distroless/cc-debian12:nonroot
cp "$(command -v prometheus)" "$work/prom/prometheus"
cat >"$work/prom/Containerfile" <<'EOF'
FROM localhost/smoke-bookworm
COPY prometheus /bin/prometheus
RUN mkdir -p /etc/prometheus /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
podman build --quiet --pull=never -t docker.io/prom/prometheus:v3.13.1 "$work/prom" >/dev/null

say "building the service's image from the Dockerfile"
start=$SECONDS
# The context has no .git; the build argument names the commit instead.
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
podman build --pull=never --network host --build-arg BUILD_REVISION="$revision" \
  -t rust-web-prometheus-example:0.1.0 . >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; fail "podman build"; }
say "built in $((SECONDS - start)) s"
podman build --quiet --pull=never -t rust-web-prometheus-example-prom prom >/dev/null

# The drain must outlast `podman stop`'s delivery of the signal, the polls
# that see the 503 and the call to /some, which take well under 1.5 s: ten
# times that, on a machine busy with builds. Each run waits it out once.
drain_secs=15

# The tutorial's way needs its ports on this machine: the service on 8080,
# Prometheus on 9090.
for port in 8080 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "something already listens on 127.0.0.1:$port"
  fi
done

say "running it"
podman network create "$network" >/dev/null
podman run --detach --name service --network "$network" --network-alias service \
  --publish 127.0.0.1:8080:8080 --env SHUTDOWN_DRAIN_SECS=$drain_secs rust-web-prometheus-example:0.1.0 >/dev/null
service=$(podman port service 8080/tcp)
wait_for_status "http://$service/healthz" 200
wait_for_status "http://$service/readyz" 200
# Read whole first: `grep -q` stops reading at its match, and under
# pipefail the write curl then fails on would fail the pipeline.
metrics=$(curl -sf "http://$service/metrics") || fail "GET /metrics failed"
grep -q '^connected_clients 0$' <<<"$metrics" ||
  fail "/metrics has no connected_clients"
grep -q "^rust_web_prometheus_example_build_info{.*revision=\"$revision\"" <<<"$metrics" ||
  fail "the build-info metric does not name the revision $revision"
user=$(podman top service user | tail -1 | tr -d ' ')
[ "$user" = 65532 ] || fail "the service runs as $user, not 65532"
say "serving on $service as user $user"
# The one call to /some before the drain: the tutorial's first query,
# incoming_requests, must then say 1.
[ "$(curl -s --max-time 2 "http://$service/some")" = "hello!" ] || fail "/some did not answer hello!"

# Both Prometheus containers at once, so their first scrapes overlap. As
# compose.yaml runs it: the arguments of its `command`, the only `- --`
# items of the prometheus service.
prometheus_started=$SECONDS
mapfile -t compose_args < <(sed -n '/^  prometheus:/,/^  [a-z]/ s/^ *- \(--.*\)$/\1/p' compose.yaml)
[ ${#compose_args[@]} -gt 0 ] || fail "compose.yaml gives Prometheus no command"
podman run --detach --name prometheus-compose --network "$network" \
  --publish 127.0.0.1::9090 rust-web-prometheus-example-prom "${compose_args[@]}" >/dev/null
# As the tutorial runs it (`docker run -p 9090:9090 --network=host
# prometheus`): the image's default configuration and storage, restated only
# to listen on loopback rather than on every interface of this machine.
podman run --detach --name prometheus --network host rust-web-prometheus-example-prom \
  --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus \
  --web.listen-address=127.0.0.1:9090 >/dev/null

# A scrape every 5 s: up within 10 s, a rate over two scrapes within 15 s;
# ten times that, on a machine busy with builds.
compose_prometheus=$(podman port prometheus-compose 9090/tcp)
retry_for 150 answers "$compose_prometheus" 'up{job="service-collector"}' \
  '"instance":"service:8080".*"value":\[[0-9.]+,"1"\]' ||
  fail "Compose's Prometheus does not see service:8080 up"
say "Compose's Prometheus scrapes service:8080 by name: up == 1"

tutorial_prometheus=127.0.0.1:9090
retry_for 150 answers "$tutorial_prometheus" 'up{job="service-collector"}' \
  '"instance":"localhost:8080".*"value":\[[0-9.]+,"1"\]' ||
  fail "the tutorial's Prometheus does not see localhost:8080 up"
retry_for 150 answers "$tutorial_prometheus" 'incoming_requests' '"value":\[[0-9.]+,"1"\]' ||
  fail "the tutorial's Prometheus does not see incoming_requests 1"
retry_for 150 answers "$tutorial_prometheus" \
  'histogram_quantile(0.90, sum(rate(response_time_bucket{env="testing"}[2m])) by (le))' \
  '"value":\[[0-9.]+,"[0-9.]+"\]' ||
  fail "the tutorial's Prometheus has no p90 of response_time"
retry_for 150 has_every_class "$tutorial_prometheus" \
  'sum(increase(response_code{env="testing"}[5m])) by (type)' ||
  fail "the tutorial's Prometheus has no increase of response_code for every class"
say "the tutorial's Prometheus scrapes localhost:8080: up == 1, incoming_requests 1, the p90 and the codes by class"
say "both Prometheus checks took $((SECONDS - prometheus_started)) s"

# `podman stop` sends the image's STOPSIGNAL, and SIGKILL after 40 s: more
# than the drain and the default 10 s of SHUTDOWN_GRACE_SECS.
podman stop --time 40 service >/dev/null &
stopping=$!
wait_for_status "http://$service/readyz" 503
[ "$(curl -s --max-time 2 "http://$service/some")" = "hello!" ] ||
  fail "/some not served during the drain"
wait "$stopping"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' service)
[ "$exit_code" = 0 ] || fail "the service exited with $exit_code"
say "podman stop: /readyz 503, /some served during the drain, exit 0"
say "passed"

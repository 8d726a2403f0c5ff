#!/usr/bin/env bash
# Builds the service's image from the root Dockerfile with Podman and runs
# it: /healthz and /metrics answer, the process is not root, and `podman
# stop` (the image's STOPSIGNAL) turns /readyz to 503 while /some is still
# served, then the container exits 0. Then the image of prom/ runs on a container network
# and scrapes the service by its name, service:8080, as in compose.yaml.
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

say "running it"
podman network create "$network" >/dev/null
podman run --detach --name service --network "$network" --network-alias service \
  --publish 127.0.0.1::8080 --env SHUTDOWN_DRAIN_SECS=$drain_secs rust-web-prometheus-example:0.1.0 >/dev/null
service=$(podman port service 8080/tcp)
wait_for_status "http://$service/healthz" 200
wait_for_status "http://$service/readyz" 200
curl -sf "http://$service/metrics" | grep -q '^connected_clients 0$' ||
  fail "/metrics has no connected_clients"
curl -sf "http://$service/metrics" | grep -q "^rust_web_prometheus_example_build_info{.*revision=\"$revision\"" ||
  fail "the build-info metric does not name the revision $revision"
user=$(podman top service user | tail -1 | tr -d ' ')
[ "$user" = 65532 ] || fail "the service runs as $user, not 65532"
say "serving on $service as user $user"

podman run --detach --name prometheus --network "$network" \
  --publish 127.0.0.1::9090 rust-web-prometheus-example-prom >/dev/null
prometheus=$(podman port prometheus 9090/tcp)
up=""
for _ in $(seq 300); do
  up=$(curl -s --max-time 2 "http://$prometheus/api/v1/query?query=up%7Bjob%3D%22service-collector%22%7D" || true)
  grep -q '"instance":"service:8080".*"value":\[[0-9.]*,"1"\]' <<<"$up" && break
  up=""
  sleep 0.1
done
[ -n "$up" ] || fail "Prometheus does not see service:8080 up"
say "Prometheus scrapes service:8080 by name: up == 1"

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

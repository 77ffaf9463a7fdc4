#!/usr/bin/env bash
# End-to-end check of the Docker deployment (docs/deploy.md); needs a Docker engine, so CI does not
# run it. It builds the images, starts one server and waits for it to be healthy, streams audio through the CLI
# (compose profile "cli") and checks the file, fetches the playground's page and streams a generation through its
# WebSocket; then starts the "scaled" profile (2 replicas behind nginx), does the same through nginx, streams
# through the proxy with the CLI and, several at once, on one connection, and checks that both replicas served
# streams; then takes everything down (the images stay).
#
#   scripts/compose-smoke.sh [--install]
#
# --install (root, Debian): apt-get install docker.io docker-compose debootstrap first. Without it these must be
# there already. As root it starts dockerd itself if the daemon is not running. The base image debian:bookworm-slim
# is pulled, or made with debootstrap when no registry answers (deploy/make-base-image.sh). The build context gets
# pip's local CPU torch wheel (find-links) and pip's CA bundle when this host has them (deploy/prepare-context.sh).
#
# Environment: SMOKE_SECONDS (audio per stream, default 1), SMOKE_STREAMS (concurrent CLI streams through the proxy,
# default 2), SMOKE_BURST (streams started together on one connection, default 4), SMOKE_REPLICAS (default 2),
# WAVENET_PUBLISH_PORT / WAVENET_PROXY_PORT / WAVENET_PUBLISH_METRICS_PORT / WAVENET_WEB_PORT / WAVENET_PROXY_WEB_PORT
# (host ports, default 50151 / 50152 / 19090 / 18080 / 18081, away from a development server on 50051 and 8080).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_AUDIO=${SMOKE_SECONDS:-1}
STREAMS=${SMOKE_STREAMS:-2}
BURST=${SMOKE_BURST:-4}
REPLICAS=${SMOKE_REPLICAS:-2}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-wavenet-smoke}
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0  # the classic builder: docker 20.10 has no buildx here
export WAVENET_PUBLISH_PORT=${WAVENET_PUBLISH_PORT:-50151}
export WAVENET_PROXY_PORT=${WAVENET_PROXY_PORT:-50152}
export WAVENET_PUBLISH_METRICS_PORT=${WAVENET_PUBLISH_METRICS_PORT:-19090}
export WAVENET_WEB_PORT=${WAVENET_WEB_PORT:-18080}
export WAVENET_PROXY_WEB_PORT=${WAVENET_PROXY_WEB_PORT:-18081}
export WAVENET_CLIENT_USER="$(id -u):$(id -g)"
# A fixed capacity per replica: replicas that start together on the same cores would measure each other with
# --max-streams auto (and whatever else runs here), and this checks routing and balancing, not capacity.
export WAVENET_MAX_STREAMS=${WAVENET_MAX_STREAMS:-4}
WAVENET_OUT=$(mktemp -d /tmp/wavenet-smoke-out.XXXXXX)
export WAVENET_OUT
LOGS=$(mktemp -d /tmp/wavenet-smoke-logs.XXXXXX)
IMAGE=${WAVENET_IMAGE:-wavenet-stream:latest}
PROXY_IMAGE=${WAVENET_PROXY_IMAGE:-wavenet-stream-proxy:latest}
START=$(date +%s)

step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# --- prerequisites -----------------------------------------------------------------------------------------------
if [ "${1:-}" = "--install" ]; then
    step "installing docker.io docker-compose debootstrap"
    apt-get update -q && apt-get install -y -q docker.io docker-compose debootstrap
fi
command -v docker >/dev/null || fail "no docker CLI (Debian: apt-get install docker.io docker-compose, or --install)"
if docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    fail "no docker-compose (Debian: apt-get install docker-compose, or --install)"
fi
compose() { "${COMPOSE[@]}" --profile scaled --profile cli "$@"; }
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
        step "starting dockerd (log: /var/log/dockerd-smoke.log)"
        nohup dockerd >/var/log/dockerd-smoke.log 2>&1 &
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
    docker info >/dev/null 2>&1 || fail "the Docker daemon is not reachable (start dockerd, or run as a docker user)"
fi

cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "--- last server/replica/proxy logs ---" >&2
        compose logs --no-color --tail=25 >&2 2>/dev/null || true
    fi
    compose down --remove-orphans -t 20 >/dev/null 2>&1 || true
    rm -rf "$WAVENET_OUT" "$LOGS"
    exit $rc
}
trap cleanup EXIT
compose down --remove-orphans -t 5 >/dev/null 2>&1 || true  # leftovers of an interrupted run

# --- build context: the local CPU torch wheel and pip's CA bundle, where this host has them ----------------------
step "build context"
deploy/prepare-context.sh

# --- images ------------------------------------------------------------------------------------------------------
step "base image"
t0=$(date +%s)
deploy/make-base-image.sh "${WAVENET_BASE_IMAGE:-debian:bookworm-slim}"
BASE_SECONDS=$(( $(date +%s) - t0 ))

step "docker-compose build (log: $LOGS/build.log)"
t0=$(date +%s)
compose build server proxy >"$LOGS/build.log" 2>&1 || { tail -n 40 "$LOGS/build.log" >&2; fail "build"; }
BUILD_SECONDS=$(( $(date +%s) - t0 ))
grep -E '^Successfully tagged' "$LOGS/build.log" || true
echo "built in ${BUILD_SECONDS} s: $IMAGE $(mb "$IMAGE"), $PROXY_IMAGE $(mb "$PROXY_IMAGE")"
docker run --rm --entrypoint python "$IMAGE" -c "
import torch, importlib.util as u
print('in the image: torch', torch.__version__, '| cuda', torch.version.cuda,
      '| compiled engine:', [m for m in ('models.generate._engine_avx512', 'models.generate._engine_avx2', 'models.generate._engine_generic') if u.find_spec(m)] or 'none')"
[ "$(docker run --rm --entrypoint id "$IMAGE" -u)" != 0 ] || fail "the image runs as root"
if docker run --rm --entrypoint sh "$IMAGE" -c 'command -v gcc g++ cc c++' >/dev/null; then fail "a compiler in the runtime image"; fi

# --- helpers -----------------------------------------------------------------------------------------------------
wait_healthy() {  # SERVICE COUNT TIMEOUT: until COUNT containers of SERVICE report healthy
    local service=$1 want=$2 deadline=$(( $(date +%s) + $3 )) ids healthy status id
    while :; do
        ids=$(compose ps -q "$service")
        healthy=0
        for id in $ids; do
            status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
            case "$status" in
                "running healthy") healthy=$((healthy + 1)) ;;
                exited* | dead*) fail "$service container $id: $status" ;;
            esac
        done
        [ "$healthy" -ge "$want" ] && { echo "$service: $healthy healthy"; return 0; }
        [ "$(date +%s)" -lt "$deadline" ] || fail "$service: $healthy of $want healthy after $3 s"
        sleep 2
    done
}

client() {  # TARGET ARGS...: wavenet-client in the image, against TARGET, writing into $WAVENET_OUT (/out)
    local target=$1; shift
    WAVENET_SERVER=$target compose run --rm -T client "$@"
}

check_wav() {  # NAME SECONDS: $WAVENET_OUT/NAME is a mono 16-bit WAV of that length that is not silence
    docker run --rm -i --user "$WAVENET_CLIENT_USER" -v "$WAVENET_OUT:/out:ro" --entrypoint python "$IMAGE" - \
        "/out/$1" "$2" <<'PY'
import array, sys, wave
path, seconds = sys.argv[1], float(sys.argv[2])
with wave.open(path) as w:
    channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
    samples = array.array("h", w.readframes(n))
problems = []
if (channels, width) != (1, 2):
    problems.append(f"{channels} channels of {8 * width} bits, not mono 16-bit")
if abs(n - round(seconds * rate)) > 1:
    problems.append(f"{n} samples, not {seconds} s at {rate} Hz")
if not samples or max(samples) == min(samples):
    problems.append("no signal (constant samples)")
peak = max((abs(s) for s in samples), default=0) / 32768
if problems:
    sys.exit(f"{path}: " + "; ".join(problems))
print(f"{path.rsplit('/', 1)[-1]}: {n / rate:.2f} s, {rate} Hz, peak {peak:.2f}: ok")
PY
}

page() {  # URL: the playground's page answers, from this host
    local got
    got=$(python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())" \
        "$1") || fail "no page at $1"
    grep -q '<title>wavenet-stream playground</title>' <<<"$got" || fail "$1 is not the playground's page"
    echo "$1: the playground's page"
}

web_generate() {  # WS_URL: one streamed generation through the playground's WebSocket relay, from the compose network
    compose run --rm -T --entrypoint python client - "$1" "$SECONDS_AUDIO" <<'PY'
import json, sys
from websockets.sync.client import connect
url, seconds = sys.argv[1], float(sys.argv[2])
received, messages = 0, 0
with connect(url, open_timeout=30) as ws:
    ws.send(json.dumps({"method": "generate", "seconds": seconds, "seed": 1}))
    for message in ws:
        if isinstance(message, bytes):
            received, messages = received + len(message) // 4, messages + 1
            continue
        answer = json.loads(message)
        break
if answer.get("type") != "summary" or received != answer["samples"] or received == 0:
    sys.exit(f"{url}: {answer}, {received} samples received")
print(f"{url}: {received} samples in {messages} messages, streamed; real-time factor {answer['real_time_factor']:.2f}")
PY
}

served() {  # CONTAINER: the number of generation requests it logged with outcome OK
    docker logs "$1" 2>&1 | grep '"request_id"' | grep -c '"outcome": "OK"' || true
}

# --- one server ----------------------------------------------------------------------------------------------------
step "single server: up"
compose up -d server
wait_healthy server 1 180
step "single server: CLI through compose (profile cli)"
client server:50051 models
client server:50051 generate --seconds "$SECONDS_AUDIO" --seed 1 -o /out/single.wav >"$LOGS/single.log" 2>&1 \
    || { cat "$LOGS/single.log" >&2; fail "stream from the server"; }
grep -o 'wrote .*' "$LOGS/single.log"  # the CLI's report (its progress bar is in the log)
check_wav single.wav "$SECONDS_AUDIO"
id=$(compose ps -q server)
[ "$(served "$id")" = 1 ] || fail "the server did not log exactly one OK request"
if command -v curl >/dev/null; then
    curl -fsS "http://127.0.0.1:$WAVENET_PUBLISH_METRICS_PORT/metrics" \
        | grep -E '^wavenet_(samples_generated_total|requests_total)' || fail "metrics: no counters"
fi
step "single server: the playground (web) on the host's port $WAVENET_WEB_PORT"
compose up -d web
wait_healthy web 1 60
page "http://127.0.0.1:$WAVENET_WEB_PORT/"
web_generate ws://web:8080/ws || fail "a generation through the playground"
compose rm -sf web server >/dev/null 2>&1

# --- scaled: replicas behind nginx -----------------------------------------------------------------------------------
step "scaled profile: $REPLICAS replicas behind nginx"
compose up -d --scale replica="$REPLICAS" proxy
wait_healthy replica "$REPLICAS" 180
for i in $(seq 30); do
    client proxy:50051 models >"$LOGS/models.txt" 2>&1 && break
    [ "$i" -lt 30 ] || { cat "$LOGS/models.txt" >&2; fail "no answer through the proxy"; }
    sleep 2
done
cat "$LOGS/models.txt"
step "scaled profile: the playground through nginx"
page "http://127.0.0.1:$WAVENET_PROXY_WEB_PORT/"
web_generate ws://proxy:8080/ws || fail "a generation through nginx and the playground"
step "scaled profile: $STREAMS concurrent CLI streams of $SECONDS_AUDIO s through the proxy"
pids=()
for i in $(seq "$STREAMS"); do
    client proxy:50051 --quiet generate --seconds "$SECONDS_AUDIO" --seed "$i" -o "/out/scaled-$i.wav" \
        >"$LOGS/client-$i.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { cat "$LOGS/client-$((i + 1)).log" >&2; fail "CLI stream $((i + 1)) through the proxy"; }
done
for i in $(seq "$STREAMS"); do check_wav "scaled-$i.wav" "$SECONDS_AUDIO"; done

replicas=$(compose ps -q replica)
per_replica() { local id; for id in $replicas; do served "$id"; done; }
before=($(per_replica))

# Per-stream balancing, deterministically: BURST Generate calls started together on ONE client connection (one
# HTTP/2 connection to nginx) must land on more than one replica, since nginx balances each call (stream) on its own.
step "scaled profile: $BURST streams started together on one connection"
WAVENET_SERVER=proxy:50051 compose run --rm -T --entrypoint python client -c "
import os, sys, threading
from client.api import WaveNetClient
n, seconds = $BURST, $SECONDS_AUDIO
got = [0] * n
start = threading.Barrier(n)
with WaveNetClient(os.environ['WAVENET_SERVER']) as c:
    def run(i):
        start.wait()
        got[i] = sum(len(chunk.audio) for chunk in c.generate(seconds, seed=100 + i))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
print('samples per stream:', got)
sys.exit(0 if min(got) > 0 and len(set(got)) == 1 else 1)
" || fail "the streams on one connection"
after=($(per_replica))

total=0
busy=0
burst_on=0
summary=()
i=0
for id in $replicas; do
    name=$(docker inspect -f '{{.Name}}' "$id" | tr -d /)
    summary+=("$name: ${after[$i]} (burst $(( after[i] - before[i] )))")
    total=$(( total + after[i] ))
    [ "${after[$i]}" -gt 0 ] && busy=$((busy + 1))
    [ $(( after[i] - before[i] )) -gt 0 ] && burst_on=$((burst_on + 1))
    i=$((i + 1))
done
printf 'streams served per replica: %s\n' "$(IFS=,; echo "${summary[*]}")"
echo "nginx access log (calls by method, status, upstream):"
compose logs --no-color proxy 2>/dev/null | grep -o 'POST /wavenet.v1.WaveNet/[A-Za-z]* .* upstream=[0-9.:]*' \
    | sed 's/ \[.*\]//' | awk '{print $2, $4, $6}' | sort | uniq -c || true
sent=$(( STREAMS + BURST + 1 ))  # and the playground's generation
[ "$total" = "$sent" ] || fail "$total streams logged by the replicas, $sent sent"
[ "$busy" -ge 2 ] || fail "only $busy replica(s) served streams"
[ "$burst_on" -ge 2 ] || fail "the $BURST streams of one connection all went to one replica"

# Client-side balancing with no proxy, as in-cluster callers of a headless Service do: the service name resolves to
# every replica (compose's DNS), and the client's round_robin (client/api.py SERVICE_CONFIG) spreads its calls.
DNS_CALLS=$(( 2 * REPLICAS ))
step "scaled profile: $DNS_CALLS calls by dns:///replica:50051 (round_robin, no proxy)"
before=($(per_replica))
WAVENET_SERVER=dns:///replica:50051 compose run --rm -T --entrypoint python client -c "
import os, sys
from client.api import WaveNetClient
with WaveNetClient(os.environ['WAVENET_SERVER']) as c:
    got = [sum(len(chunk.audio) for chunk in c.generate($SECONDS_AUDIO, seed=200 + i)) for i in range($DNS_CALLS)]
print('samples per call:', got)
sys.exit(0 if min(got) > 0 and len(set(got)) == 1 else 1)
" || fail "the calls by DNS"
after=($(per_replica))
dns_summary=()
i=0
for id in $replicas; do
    name=$(docker inspect -f '{{.Name}}' "$id" | tr -d /)
    dns_summary+=("$name: $(( after[i] - before[i] ))")
    [ $(( after[i] - before[i] )) -gt 0 ] || fail "replica $name served none of the $DNS_CALLS calls by DNS"
    i=$((i + 1))
done
printf 'calls by DNS per replica: %s\n' "$(IFS=,; echo "${dns_summary[*]}")"

step "tear down"
compose down --remove-orphans -t 20
trap - EXIT
rm -rf "$WAVENET_OUT" "$LOGS"
printf '\nPASS in %s s: base image %s s, build %s s; %s %s; single server and %s replicas behind nginx (%s); by DNS, round_robin (%s)\n' \
    "$(( $(date +%s) - START ))" "$BASE_SECONDS" "$BUILD_SECONDS" "$IMAGE" "$(mb "$IMAGE")" "$REPLICAS" \
    "$(IFS=,; echo "${summary[*]}")" "$(IFS=,; echo "${dns_summary[*]}")"

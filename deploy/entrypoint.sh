#!/usr/bin/env bash
# The image's entrypoint: `serve` (the default) runs wavenet-server with its options taken from WAVENET_* variables,
# `client ...` runs wavenet-client against $WAVENET_SERVER, `web` runs the playground (wavenet-web) against
# $WAVENET_SERVER on port $WAVENET_WEB_PORT (default 8080), anything else is run as given.
#
# serve: the model(s) are $WAVENET_MODEL (space-separated [NAME=]PATH; unset: the bundled model, named "default")
# and every *.pt in $WAVENET_MODEL_DIR (default /models, the compose mount for extra models), each named by its file
# name (wavenet-server --model-dir: the folder's default.pt replaces the bundled model, a name WAVENET_MODEL already
# gives is left out with a warning). Each variable below becomes its flag when set and non-empty; unset ones keep
# the server's defaults. Arguments after `serve` are passed on to wavenet-server as they are.
set -euo pipefail
[ -n "${OMP_NUM_THREADS:-}" ] || unset OMP_NUM_THREADS  # compose passes it empty when not set

serve() {
    local args=(--host "${WAVENET_HOST:-0.0.0.0}" --port "${WAVENET_PORT:-50051}") spec specs=()
    read -ra specs <<< "${WAVENET_MODEL:-}"  # space-separated, as documented
    for spec in "${specs[@]}"; do
        args+=(--model "$spec")
    done
    [ ! -d "${WAVENET_MODEL_DIR:-/models}" ] || args+=(--model-dir "${WAVENET_MODEL_DIR:-/models}")
    flag() { if [ -n "${!1:-}" ]; then args+=("$2" "${!1}"); fi; }
    flag WAVENET_MAX_STREAMS --max-streams
    flag WAVENET_METRICS_PORT --metrics-port
    flag WAVENET_GRACE --grace
    flag WAVENET_MAX_CONNECTION_AGE --max-connection-age
    flag WAVENET_MAX_SECONDS --max-seconds
    flag WAVENET_MAX_FRAMES --max-frames
    flag WAVENET_MAX_MESSAGE_BYTES --max-message-bytes
    flag WAVENET_IDLE_SECONDS --idle-seconds
    flag WAVENET_TLS_CERT --tls-cert
    flag WAVENET_TLS_KEY --tls-key
    flag WAVENET_TOKENS_FILE --tokens-file  # WAVENET_TOKENS (comma-separated) the server reads itself
    flag WAVENET_LOG_LEVEL --log-level
    flag WAVENET_PRECISION --precision  # the compiled generator's weights, where the server has the flag
    exec wavenet-server "${args[@]}" "$@"
}

case "${1:-serve}" in
    serve) shift || true; serve "$@" ;;
    client) shift; exec wavenet-client --server "${WAVENET_SERVER:-localhost:50051}" "$@" ;;
    web) shift; exec wavenet-web --server "${WAVENET_SERVER:-localhost:50051}" --host 0.0.0.0 \
        --port "${WAVENET_WEB_PORT:-8080}" "$@" ;;
    *) exec "$@" ;;
esac

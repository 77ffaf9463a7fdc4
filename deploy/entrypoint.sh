#!/usr/bin/env bash
# The image's entrypoint: `serve` (the default) runs wavenet-server with its options taken from WAVENET_* variables,
# `client ...` runs wavenet-client against $WAVENET_SERVER, anything else is run as given.
#
# serve: the model(s) are $WAVENET_MODEL (space-separated [NAME=]PATH; default the bundled model, named "default",
# unless the folder below has its own default.pt) followed by every other *.pt in $WAVENET_MODEL_DIR (default
# /models, the compose mount for extra models), each named by its file name; a file whose name $WAVENET_MODEL
# already gives is left out with a note (the server refuses two models of one name). Each variable below becomes
# its flag when set and non-empty; unset ones keep the server's defaults. Arguments after `serve` are passed on to
# wavenet-server as they are.
set -euo pipefail
[ -n "${OMP_NUM_THREADS:-}" ] || unset OMP_NUM_THREADS  # compose passes it empty when not set

serve() {
    local args=(--host "${WAVENET_HOST:-0.0.0.0}" --port "${WAVENET_PORT:-50051}")
    local dir=${WAVENET_MODEL_DIR:-/models} spec path name specs=()
    local -A served=()  # model name -> path
    read -ra specs <<< "${WAVENET_MODEL:-}"  # space-separated, as documented
    if [ ${#specs[@]} = 0 ]; then  # the folder's own default.pt comes first, in the bundled model's place
        specs=(/opt/wavenet/models/default.pt)
        [ ! -f "$dir/default.pt" ] || specs=("default=$dir/default.pt")
    fi
    for spec in "${specs[@]}"; do
        args+=(--model "$spec")
        name=$(spec_name "$spec")
        served[$name]=${spec#"$name="}
    done
    if [ -d "$dir" ]; then
        for path in "$dir"/*.pt; do
            [ -f "$path" ] || continue
            name=${path##*/}; name=${name%.pt}
            if [ -n "${served[$name]+set}" ]; then
                [ "${served[$name]}" = "$path" ] ||
                    echo "entrypoint: $path not served: WAVENET_MODEL already names a model '$name'" >&2
                continue
            fi
            args+=(--model "$name=$path")
            served[$name]=$path
        done
    fi
    flag() { if [ -n "${!1:-}" ]; then args+=("$2" "${!1}"); fi; }
    flag WAVENET_MAX_STREAMS --max-streams
    flag WAVENET_METRICS_PORT --metrics-port
    flag WAVENET_GRACE --grace
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

# The name wavenet-server gives a --model spec (server/service.py, model_spec): a spec that is an existing file, or
# has no '=', is a path named by its stem; otherwise the name ends at the first '=' (empty: the path's stem).
spec_name() {
    local spec=$1 name path base
    if [[ $spec != *=* ]] || [ -f "$spec" ]; then
        path=$spec
    else
        name=${spec%%=*} path=${spec#*=}
        [ -z "$name" ] || { echo "$name"; return; }
    fi
    base=${path##*/}
    name=${base%.*}
    echo "${name:-$base}"
}

case "${1:-serve}" in
    serve) shift || true; serve "$@" ;;
    client) shift; exec wavenet-client --server "${WAVENET_SERVER:-localhost:50051}" "$@" ;;
    *) exec "$@" ;;
esac

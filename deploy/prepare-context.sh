#!/usr/bin/env bash
# Put this host's pip inputs into the Docker build context, for hosts where pip inside the build could not do
# without them (both git-ignored, both optional; the Dockerfile says how each is used):
#   deploy/wheels/torch-2.13.0+cpu-*.whl   the CPU torch wheel from pip's find-links folder (e.g. /opt/wheels),
#                                          so the image never downloads torch, let alone a CUDA build
#   deploy/certs/ca-bundle.crt             the CA bundle pip is configured with (a TLS-intercepting proxy);
#                                          used in the builder stage only, not in the image
# Without a local wheel the image takes torch from PyTorch's CPU index instead.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

pip_setting() {  # the values of pip's setting $1, from its config files and PIP_* variables
    { python3 -m pip config list 2>/dev/null || pip config list 2>/dev/null || true; } \
        | sed -n "s/^[^=]*\.$1='\(.*\)'$/\1/p"
}

rm -f wheels/*.whl
for dir in ${PIP_FIND_LINKS:-} $(pip_setting find-links) /opt/wheels; do
    dir=${dir#file://}
    wheel=$(ls "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-*x86_64.whl 2>/dev/null | head -n1 || true)
    if [ -n "$wheel" ]; then
        cp "$wheel" wheels/
        echo "torch: $wheel"
        break
    fi
done
ls wheels/*.whl >/dev/null 2>&1 || echo "torch: no local CPU wheel; the image will take torch from PyTorch's CPU index"

rm -f certs/ca-bundle.crt
cert=${PIP_CERT:-$(pip_setting cert | head -n1)}
if [ -n "$cert" ] && [ -f "$cert" ]; then
    cp "$cert" certs/ca-bundle.crt
    echo "pip CA bundle: $cert (builder stage only)"
fi

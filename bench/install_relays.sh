#!/usr/bin/env bash
# Install the relays bench/compare measures `wenxin serve` against; safe to run again (it only
# adds what is missing).
#
#   install_relays.sh                  all of it
#   install_relays.sh taskset nginx    only those (compare names what its --targets need)
#
#   nginx                from Debian's packages (apt); only the binary is used — compare writes
#                        its own config and never touches the system service
#   taskset              util-linux, to pin each process to its core
#   litellm              bench/.venv-litellm: LiteLLM's proxy, pinned, in a virtual environment
#                        of its own (it pins many libraries that must not leak into the
#                        project's .venv). 1.106.2 is the newest release that installs from the
#                        registry reachable here.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
LITELLM_SPEC=${LITELLM_SPEC:-"litellm[proxy]==1.106.2"}
wanted=" ${*:-nginx taskset litellm} "
for name in $wanted; do
    case "$name" in
        nginx | taskset | litellm) ;;
        *) echo "install_relays: unknown component '$name' (nginx, taskset, litellm)" >&2; exit 2 ;;
    esac
done
want() { [[ "$wanted" == *" $1 "* ]]; }

if want nginx && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "install_relays: installing nginx (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # nginx-light would do, but bookworm only ships `nginx` (with the core modules we need).
    apt-get install -y -qq --no-install-recommends nginx >/dev/null
    # The package starts the system service on :80; compare runs its own instance, so stop it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
        systemctl stop nginx || true
    elif [ -f /run/nginx.pid ]; then
        kill "$(cat /run/nginx.pid)" 2>/dev/null || true
    fi
fi

# taskset (util-linux) pins each process to its core.
if want taskset && ! command -v taskset >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends util-linux >/dev/null
fi

if ! want litellm; then
    exit 0
fi
if [ ! -x .venv-litellm/bin/python ]; then
    "$PYTHON" -m venv .venv-litellm
fi
stamp=.venv-litellm/.installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$LITELLM_SPEC" ]; then
    echo "install_relays: installing $LITELLM_SPEC into bench/.venv-litellm (takes a few minutes)" >&2
    .venv-litellm/bin/pip install --quiet --disable-pip-version-check --upgrade pip
    .venv-litellm/bin/pip install --quiet --disable-pip-version-check "$LITELLM_SPEC"
    # Fail here, loudly, if the proxy cannot be imported. (The local cost map: LiteLLM would
    # otherwise fetch one from the network at import time.)
    LITELLM_LOCAL_MODEL_COST_MAP=True .venv-litellm/bin/python -c "import litellm.proxy.proxy_server" >/dev/null
    echo "$LITELLM_SPEC" >"$stamp"
fi

#!/usr/bin/env bash
# Prepare this checkout to run: the Debian packages the project needs, then a virtual
# environment in .venv built from pyproject.toml. Safe to run again; it only does what is
# missing. Used by `make test` and `make demo`; prints exactly what it needs when it cannot
# install it itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, one per line: what the code and the test suite need on the machine.
# Grown by the issues that bring the components (pcscd, vpcd, mosquitto, ...).
DEBIAN_PACKAGES=(
    python3-venv
    gcc swig libpcsclite-dev      # pyscard builds from source (no Linux wheel)
    pcscd vsmartcard-vpcd pcsc-tools   # the real PC/SC stack and its virtual reader
    mosquitto mosquitto-clients   # the real MQTT broker the tests talk to
    socat                         # serial line tools for hardware-in-the-loop work
    softhsm2                      # the PKCS#11 token the bridge's key store is tested on
    postgresql                    # the bridge's journal at scale (a private cluster per run)
    chromium                      # the cashier page's browser tests (Playwright drives it)
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
# A Python that already has a working venv module (pyenv, a backport) needs no python3-venv.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    filtered=()
    for pkg in "${missing[@]}"; do [ "$pkg" = python3-venv ] || filtered+=("$pkg"); done
    missing=("${filtered[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages. Install them, then run this again:" >&2
        echo "    sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: Python 3.11 or newer is needed; $PY is $("$PY" --version 2>&1)" >&2
    exit 1
fi

stamp=.venv/.installed-from
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: installing the project and its test tools into .venv"
    log=.venv/install.log
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
           && .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'; } \
           >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "bootstrap: installing into .venv failed; the whole log is $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

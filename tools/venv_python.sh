#!/bin/sh
# The Python interpreter Bazel runs: the repository's .venv (made by `make`), found from this
# script's real location so it works from Bazel's runfiles and sandboxes.
here=$(dirname "$(readlink -f "$0")")
venv="${FAQ_TF_VENV:-$here/../.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "faq_tf Bazel: no Python environment at $venv; run 'make' in the repository first (or set FAQ_TF_VENV)." >&2
  exit 1
fi
exec "$venv/bin/python" "$@"

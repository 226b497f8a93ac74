#!/usr/bin/env bash
# Install splitway with its dev tools into .venv, then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/ruff check proxy control tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"

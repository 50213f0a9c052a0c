#!/usr/bin/env bash
# README command (1): the whole story end to end on the local stack (Kafka + PostgreSQL).
# Leaves the stack running; stop it with `.venv/bin/leo-activation dev down`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/bootstrap.sh

leo=.venv/bin/leo-activation
"$leo" dev up
eval "$("$leo" dev status --env)"
"$leo" migrate
"$leo" demo

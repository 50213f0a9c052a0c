#!/usr/bin/env bash
# The benchmarks in one command: figures and ratios measured side by side in one run.
# Bootstraps the venv, starts (or reuses) the local stack in its default home (LEO_DEV_HOME picks
# another) and runs `python -m bench`; extra arguments go to it, e.g.
#   scripts/bench.sh --full            # the full sizes: 1M messages, a 1M-member snapshot
#   scripts/bench.sh --only receipts   # one section; --help lists sizes and their LEO_BENCH_* vars
#   scripts/bench.sh --peer connect --only peer   # against Kafka Connect's JDBC sink (mvn fetch)
# The stack's addresses come from the stack itself: LEO_KAFKA_BOOTSTRAP / LEO_DATABASE_URL /
# LEO_ADMIN_DATABASE_URL are ignored unless LEO_BENCH_USE_ENV=1 (then the bench runs there).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/bootstrap.sh

if [[ "${LEO_BENCH_USE_ENV:-0}" != "1" ]]; then
  unset LEO_KAFKA_BOOTSTRAP LEO_DATABASE_URL LEO_ADMIN_DATABASE_URL
fi
.venv/bin/python -m leo_activation dev up
exec .venv/bin/python -m bench "$@"

#!/usr/bin/env bash
# `nox -s scaleout`: start SLURM, PostgreSQL and an MLflow tracking server on 127.0.0.1
# (services.sh), run sah on each and check the results (check.py), stop everything on exit.
# Needs a Debian machine and root (apt-get, munge/slurm daemons, a postgres cluster as the
# postgres user), as CI and the project's machines are. Logs stay in the printed folder.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "scaleout: needs root on a Debian machine (apt-get, slurmctld, postgres); not run" >&2
  exit 2
fi

STATE=$(mktemp -d /tmp/sah-scaleout.XXXXXX)
trap 'bash "$HERE/services.sh" down "$STATE"; echo "scaleout: logs in $STATE"' EXIT
trap 'exit 130' INT TERM

started=$SECONDS
bash "$HERE/services.sh" up "$STATE"
echo "scaleout: engines up in $((SECONDS - started)) s"
# shellcheck disable=SC1091
source "$STATE/env"
python "$HERE/check.py" --work "$STATE/work" "$@"

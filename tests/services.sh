#!/usr/bin/env bash
# Start the servers the tests use, as CI has them: MariaDB on 127.0.0.1:3306 (root, empty password),
# PostgreSQL (a superuser role for root, over the Unix socket) and a single-node Slurm. Idempotent: what
# runs already is left alone. Run as root (it installs missing Debian packages and starts daemons).
#   bash tests/services.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "services: run as root (it starts MariaDB, PostgreSQL and Slurm for the tests)" >&2
  exit 1
fi
missing=()
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# MariaDB: the mariadb tests (and Slurm's accounting) need it on 127.0.0.1:3306.
if ! (echo > /dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 30); do
    (echo > /dev/tcp/127.0.0.1/3306) 2>/dev/null && break
    sleep 1
  done
fi

# PostgreSQL: the Immich tests create throwaway databases through a superuser role named root.
if ! pg_lsclusters -h | grep -q .; then
  pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main
fi
pg_lsclusters -h | while read -r version cluster _port status _rest; do
  [ "$status" = online ] || pg_ctlcluster "$version" "$cluster" start
done
for _ in $(seq 1 30); do
  su postgres -c "psql -tAc 'SELECT 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname = 'root'\"" | grep -q 1 ||
  su postgres -c "createuser --superuser root"

# Slurm: munge, slurmdbd (on the MariaDB above), slurmctld and slurmd, one gpu GRES on a stand-in device.
bash .ci/start-slurm.sh

#!/usr/bin/env bash
# The system tools backup-pipelines runs, installed from Debian's packages; shared by scripts/setup.sh (a
# development or CI machine) and the Dockerfile (the code-location image), so CI exercises the same steps.
#
#   bash scripts/install_tools.sh           development / CI: servers for the tests, clients, tools (what is missing)
#   bash scripts/install_tools.sh --image   the image: clients only, pg_dump/pg_restore for PostgreSQL 13-17
#                                           from the PGDG repository (a pg_dump cannot dump a newer server)
#   add --print to list the packages instead of installing them
set -euo pipefail

mode=dev print=no
for argument in "$@"; do
  case $argument in
    --image) mode=image ;;
    --print) print=yes ;;
    *) echo "install_tools.sh: unknown argument $argument" >&2; exit 2 ;;
  esac
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# The tools every backup or restore may run: the kinds' clients, compression, encryption, restic, pgBackRest.
COMMON=(zstd age restic pgbackrest mariadb-client mariadb-backup jq ca-certificates)
PG_MAJORS=(13 14 15 16 17)

need=()
if [ "$mode" = image ]; then
  need=("${COMMON[@]}" curl gnupg sqlite3 util-linux)
  for major in "${PG_MAJORS[@]}"; do need+=("postgresql-client-$major"); done
else
  for tool in zstd age restic pgbackrest jq; do command -v "$tool" >/dev/null || need+=("$tool"); done
  command -v mariabackup >/dev/null || need+=(mariadb-backup)  # physical MariaDB backups
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-client)
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server mariadb-client)
  command -v runuser >/dev/null || need+=(util-linux)
  command -v sqlite3 >/dev/null || need+=(sqlite3)  # the tests judge restored SQLite files with its .dump
  command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)  # renders the status dashboard in e2e tests
fi

if [ "$print" = yes ]; then
  printf '%s\n' "${need[@]}"
  exit 0
fi
[ ${#need[@]} -gt 0 ] || exit 0
echo "install_tools: installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ "$mode" = image ]; then
  # PGDG's repository has every supported major's client next to each other (/usr/lib/postgresql/<N>/bin).
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates gnupg >/dev/null
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc | gpg --dearmor -o /usr/share/keyrings/pgdg.gpg
  echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt $codename-pgdg main" \
    > /etc/apt/sources.list.d/pgdg.list
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [ "$mode" = image ]; then
  $SUDO apt-get clean
  $SUDO rm -rf /var/lib/apt/lists/*
fi

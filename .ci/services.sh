#!/usr/bin/env bash
# Installs (Debian) what the tests need beyond Python packages: a PostgreSQL server,
# started on loopback with a `scanq` role and database, and Chromium for the browser
# tests (driven by Playwright's Python package, which downloads no browser of its own),
# and Orthanc with its DICOMweb plugin for the PACS tests (started by the tests themselves).
# Writes .ci/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Orthanc and its DICOMweb plugin: the PACS the DICOM tests (issue #19) start on loopback
# with their own configuration (tests/orthanc.py); the system service is not used.
{ command -v Orthanc || [ -x /usr/sbin/Orthanc ]; } >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 30); do
  su postgres -c "psql -p $port -Atc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scanq') THEN
    CREATE ROLE scanq LOGIN PASSWORD 'scanq' CREATEDB;
  END IF;
END \$\$;
SQL
su postgres -c "psql -p $port -Atc \"select 1 from pg_database where datname='scanq_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port -O scanq scanq_test"
echo "SCANQ_TEST_POSTGRES_URL=postgresql+psycopg://scanq:scanq@127.0.0.1:$port/scanq_test" > .ci/services.env
echo "PostgreSQL $version on port $port"

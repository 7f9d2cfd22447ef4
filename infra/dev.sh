#!/usr/bin/env bash
# Switchyard's two commands for a newcomer:
#   ./infra/dev.sh up     install what is missing, start a private Postgres, migrate, seed the demo tenant,
#                         run the API and the workers; Ctrl-C stops everything it started.
#   ./infra/dev.sh test   the same preparation against a fresh test database, then the whole test suite.
#   ./infra/dev.sh docs   build the manual (docs/, mdBook) into .data/book.
# Set DATABASE_URL and APP_DATABASE_URL to use your own Postgres instead of the private one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${SWITCHYARD_DATA_DIR:-$ROOT/.data}
# A port of its own per checkout, so that two checkouts on one machine never share a cluster. Every private port is
# below the kernel's ephemeral range (32768 and up), where an outgoing connection could be holding it.
PG_PORT=${SWITCHYARD_PG_PORT:-$((11432 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000))}
# The private MQTT broker (Tasmota plugs: the demo's and the tests') gets a port of its own too.
MQTT_PORT=${SWITCHYARD_MQTT_PORT:-$((12883 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000))}
# And the private Redis (wake-ups between API replicas in the tests), and the demo venue's 5 ports: its simulated
# devices, the bridge's agent server and its /metrics (below the kernel's ephemeral range).
DEVICES_PORT=${SWITCHYARD_DEVICES_PORT:-$((21000 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000 * 5))}
REDIS_PORT=${SWITCHYARD_REDIS_PORT:-$((16379 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000))}
# The SMTP sink that the demo's and the tests' email is delivered to (tests/mail/smtp_sink.py).
SMTP_SINK_PORT=${SWITCHYARD_SMTP_PORT:-$((14025 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000))}
# The private S3-compatible server (moto in server mode) for receipts, invoices and reports.
S3_PORT=${SWITCHYARD_S3_PORT:-$((14100 + $(printf '%s' "$ROOT" | cksum | cut -d' ' -f1) % 1000))}
STARTED_PG=""
CHILDREN=()

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_packages() {
  command -v cargo >/dev/null || die "no Rust toolchain: install rustup (https://rustup.rs) and run this again"
  cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 || rustup component add clippy rustfmt
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v cc >/dev/null || missing+=(build-essential)
  command -v curl >/dev/null || missing+=(curl)
  # openssl makes the push tests' provider keys (FCM RSA, APNs P-256).
  command -v openssl >/dev/null || missing+=(openssl)
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  # Debian's Python with its venv module, for the OCPP test peer's private environment (prepare_ocpp_peer).
  [ -x /usr/bin/python3 ] || missing+=(python3)
  /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  # The test command validates the compose file with Debian's docker-compose (a client only; no engine needed).
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  # The web console: Node.js and npm to build it (Debian's are enough), and Debian's Chromium for its browser tests.
  if [ "${SWITCHYARD_CONSOLE:-on}" != off ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A private Python virtual environment, $DATA/<$1>-venv, with the exact versions of tests/<$1>/requirements.txt;
# made again only when that file (or Debian's Python) changed. $2 names it in the log; $3, a program it must hold.
python_venv() {
  local name=$1 what=$2 program=${3:-python}
  local venv="$DATA/$name-venv" requirements="$ROOT/tests/$name/requirements.txt" want
  want=$({ cat "$requirements"; /usr/bin/python3 --version; } | sha256sum | cut -d' ' -f1)
  if [ ! -x "$venv/bin/$program" ] || [ "$(cat "$venv/requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "preparing $what in $venv"
    rm -rf "$venv"
    mkdir -p "$DATA"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
      || die "could not install tests/$name/requirements.txt into $venv"
    printf '%s\n' "$want" > "$venv/requirements.sha256"
  fi
}

# The OCPP test peer (tests/ocpp: a charge point and a central system written with the Python `ocpp` package);
# SWITCHYARD_OCPP_PYTHON points the tests at it.
prepare_ocpp_peer() {
  python_venv ocpp "the OCPP test peer's Python"
  export SWITCHYARD_OCPP_PYTHON="$DATA/ocpp-venv/bin/python"
}

# The SMTP sink (tests/mail/smtp_sink.py, on the PyPI package aiosmtpd).
prepare_mail_sink() {
  python_venv mail "the SMTP sink's Python"
}

# Starts the SMTP sink on 127.0.0.1:$SMTP_SINK_PORT writing every message it accepts to folder $1 (as .eml and
# .json); stopped with everything else. The tests' sink asks for a login (AUTH, no TLS: local only).
start_mail_sink() {
  local folder=$1; shift
  prepare_mail_sink
  mkdir -p "$folder"
  port_open "$SMTP_SINK_PORT" && die "port $SMTP_SINK_PORT is taken; set SWITCHYARD_SMTP_PORT to a free port"
  say "starting the SMTP sink on 127.0.0.1:$SMTP_SINK_PORT (mail goes to $folder)"
  "$DATA/mail-venv/bin/python" "$ROOT/tests/mail/smtp_sink.py" --port "$SMTP_SINK_PORT" --dir "$folder" "$@" \
    >"$DATA/smtp-sink.log" 2>&1 & CHILDREN+=($!)
  for _ in $(seq 1 100); do port_open "$SMTP_SINK_PORT" && break; sleep 0.1; done
  port_open "$SMTP_SINK_PORT" || die "the SMTP sink did not start; see $DATA/smtp-sink.log"
}

# The S3-compatible server (moto in server mode) and pypdf, which the tests read the PDFs back with;
# SWITCHYARD_S3_PYTHON points the tests at it.
prepare_s3_server() {
  python_venv s3 "the S3-compatible server (moto)" moto_server
  export SWITCHYARD_S3_PYTHON="$DATA/s3-venv/bin/python"
}

# A private S3-compatible server on 127.0.0.1:$S3_PORT (in memory: its objects go when it stops), with the bucket
# $1 created; stopped with everything else. Exports the S3_* settings for the API (unless S3_BUCKET is set: then
# that store is used and nothing is started).
start_s3() {
  local bucket=$1
  if [ -n "${S3_BUCKET:-}" ]; then
    say "using the object store at ${S3_ENDPOINT:-AWS}, bucket $S3_BUCKET"
    return
  fi
  if port_open "$S3_PORT"; then
    say "using the S3-compatible server already on 127.0.0.1:$S3_PORT"
  else
    say "starting the S3-compatible server (moto) on 127.0.0.1:$S3_PORT"
    "$DATA/s3-venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$DATA/s3.log" 2>&1 & CHILDREN+=($!)
    for _ in $(seq 1 100); do port_open "$S3_PORT" && break; sleep 0.1; done
    port_open "$S3_PORT" || die "the S3-compatible server did not start; see $DATA/s3.log"
  fi
  curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$S3_PORT/$bucket" || die "could not create the bucket $bucket"
  # moto accepts any key pair; these only have to be present and signed with.
  export S3_ENDPOINT="http://127.0.0.1:$S3_PORT" S3_REGION=us-east-1 S3_BUCKET="$bucket" S3_FORCE_PATH_STYLE=true \
    S3_ACCESS_KEY_ID=switchyard-dev S3_SECRET_ACCESS_KEY=switchyard-dev-secret
}

# Runs a Postgres server binary as the cluster's owner: postgres refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    say "using the Postgres at DATABASE_URL"
    return
  fi
  local bin pgdata="$DATA/pg" sock="$DATA/pg-run"
  bin=$(pg_bin)
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DATA"; then
    # The checkout is somewhere the postgres user cannot enter (under /root, say): keep the cluster in its home.
    pgdata="$(getent passwd postgres | cut -d: -f6)/switchyard-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
    sock="$pgdata-run"
    say "postgres cannot reach $DATA; using $pgdata for the private cluster"
  fi
  mkdir -p "$pgdata" "$sock"
  if [ "$(id -u)" = 0 ]; then chown postgres "$pgdata" "$sock"; chmod 700 "$pgdata"; fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    say "creating a private Postgres cluster in $pgdata"
    # Trust auth, bound to 127.0.0.1 and a private port: a local development cluster only.
    as_pg "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && [ ! -f "$pgdata/postmaster.pid" ]; then
    die "port $PG_PORT is taken by another Postgres; set SWITCHYARD_PG_PORT to a free port"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
    say "starting Postgres on 127.0.0.1:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_EXTRA_OPTS:-}" start >/dev/null
    STARTED_PG="$pgdata"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A private Mosquitto on 127.0.0.1:$MQTT_PORT, stopped with everything else; MQTT_URL points at it.
start_mosquitto() {
  local bin conf="$DATA/mosquitto.conf"
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  mkdir -p "$DATA"
  if port_open "$MQTT_PORT"; then
    say "using the MQTT broker already on 127.0.0.1:$MQTT_PORT"
  else
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$conf"
    [ "$(id -u)" = 0 ] && printf 'user root\n' >> "$conf"
    say "starting Mosquitto on 127.0.0.1:$MQTT_PORT"
    "$bin" -c "$conf" >"$DATA/mosquitto.log" 2>&1 & CHILDREN+=($!)
    for _ in $(seq 1 50); do port_open "$MQTT_PORT" && break; sleep 0.1; done
    port_open "$MQTT_PORT" || die "Mosquitto did not start; see $DATA/mosquitto.log"
  fi
  MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT"
}

# A private Redis on 127.0.0.1:$REDIS_PORT (no persistence), stopped with everything else; TEST_REDIS_URL points at it.
start_redis() {
  local bin
  bin=$(command -v redis-server || echo /usr/bin/redis-server)
  mkdir -p "$DATA"
  if port_open "$REDIS_PORT"; then
    say "using the Redis already on 127.0.0.1:$REDIS_PORT"
  else
    say "starting Redis on 127.0.0.1:$REDIS_PORT"
    "$bin" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      >"$DATA/redis.log" 2>&1 & CHILDREN+=($!)
    for _ in $(seq 1 50); do port_open "$REDIS_PORT" && break; sleep 0.1; done
    port_open "$REDIS_PORT" || die "Redis did not start; see $DATA/redis.log"
  fi
  export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
}

stop_postgres() {
  if [ -n "$STARTED_PG" ]; then
    say "stopping Postgres"
    as_pg "$(pg_bin)/pg_ctl" -D "$STARTED_PG" -m fast -w stop >/dev/null || true
    STARTED_PG=""
  fi
}

cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CHILDREN[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_postgres
}

# Builds the web console into console/dist (dependencies from the npm registry at the lockfile's versions, installed
# again only when the lockfile changed): the codegen checks every operation against graphql/schema.graphql, then the
# type check and the Vite build. With "test", the console's own unit tests (Vitest) run too.
build_console() {
  local dir="$ROOT/console" stamp
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 18 ] || die "the console needs Node.js 18 or newer (found $(node --version))"
  stamp="$(cksum < "$dir/package-lock.json")"
  if [ ! -d "$dir/node_modules" ] || [ "$(cat "$dir/node_modules/.switchyard-lock" 2>/dev/null)" != "$stamp" ]; then
    say "installing the console's npm packages"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in console/"
    printf '%s' "$stamp" > "$dir/node_modules/.switchyard-lock"
  fi
  say "building the web console"
  (cd "$dir" && npm run --silent build) || die "the console did not build (see above)"
  if [ "${1:-}" = test ]; then
    say "testing the web console (Vitest)"
    (cd "$dir" && npx vitest run) || die "the console's unit tests failed"
  fi
}

# promtool, from Debian's prometheus package: the one on the PATH, else the package's promtool unpacked under
# $DATA/tools (downloaded, not installed: no Prometheus service is set up on the machine). Sets PROMTOOL.
ensure_promtool() {
  PROMTOOL=$(command -v promtool || echo "$DATA/tools/promtool")
  [ -x "$PROMTOOL" ] && return
  say "fetching promtool (Debian's prometheus package, unpacked into $DATA/tools)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
    || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null); } \
    || die "could not download Debian's prometheus package (for promtool)"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/unpacked"
  mkdir -p "$DATA/tools"
  cp "$tmp/unpacked/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
}

# The production files, checked as they would be deployed: the Prometheus rules (promtool check and unit tests),
# the Prometheus configurations, the Grafana dashboards (exactly what infra/grafana/dashboards.py writes), the
# compose file (docker-compose config, with every required value given), the Kubernetes manifests (rendered
# by kubectl's kustomize, validated strictly against the Kubernetes schemas by kubernetes-validate), and what
# tests/deploy/check.py checks across them (fixed compose addresses, the jobs the rules select, Secrets, probes).
check_deploy() {
  local infra="$ROOT/infra" work="$DATA/deploy-check"
  python_venv deploy "the deployment checks' tools (kubectl, kubernetes-validate)" kubectl
  ensure_promtool
  say "checking the Prometheus rules, the Grafana dashboards, the compose file and the Kubernetes manifests"
  rm -rf "$work" && mkdir -p "$work"
  "$PROMTOOL" check rules "$infra/prometheus/rules.yml" >/dev/null || die "infra/prometheus/rules.yml is invalid"
  "$PROMTOOL" test rules "$infra/prometheus/tests/rules.test.yml" || die "the alert rules' unit tests failed"
  sed "s|/etc/prometheus/rules.yml|$infra/prometheus/rules.yml|" "$infra/prometheus/prometheus.yml" > "$work/prometheus.yml"
  "$PROMTOOL" check config "$work/prometheus.yml" >/dev/null || die "infra/prometheus/prometheus.yml is invalid"
  # Debian's promtool is built without Kubernetes discovery: an empty static list stands in for the pod discovery,
  # and the rest (the relabelling) is checked; check.py below runs the relabelling on the rendered pods.
  sed -e "s|/etc/prometheus/rules.yml|$infra/prometheus/rules.yml|" -e 's/kubernetes_sd_configs:/static_configs:/' \
    -e 's/- role: pod$/- targets: []/' "$infra/prometheus/kubernetes.yml" > "$work/kubernetes.yml"
  "$PROMTOOL" check config "$work/kubernetes.yml" >/dev/null || die "infra/prometheus/kubernetes.yml is invalid"
  /usr/bin/python3 "$infra/grafana/dashboards.py" --check || die "the dashboards differ from infra/grafana/dashboards.py"
  sed -n 's/^\([A-Z0-9_]*\)=$/\1=check-value-0123456789/p; s/^\([A-Z0-9_]*=..*\)$/\1/p' "$infra/compose/env.example" > "$work/compose.env"
  docker-compose -f "$infra/compose/compose.yml" --env-file "$work/compose.env" config -q \
    || die "infra/compose/compose.yml is invalid"
  local overlay rendered=()
  for overlay in "$infra"/k8s/overlays/*/; do
    "$DATA/deploy-venv/bin/kubectl" kustomize "$overlay" > "$work/$(basename "$overlay").yaml" \
      || die "kustomize could not render $overlay"
    "$DATA/deploy-venv/bin/kubernetes-validate" --strict --quiet "$work/$(basename "$overlay").yaml" \
      || die "the manifests of $overlay do not validate"
    rendered+=("$work/$(basename "$overlay").yaml")
  done
  "$DATA/deploy-venv/bin/python" "$ROOT/tests/deploy/check.py" "$infra" "${rendered[@]}" \
    || die "the production files are inconsistent (tests/deploy/check.py, above)"
}

# The manual (docs/) with mdBook from crates.io (installed once into $DATA/tools), built in a copy beside the
# OpenAPI document and the GraphQL schema of this build, into $DATA/book. Needs the `switchyard` binary built.
MDBOOK_VERSION=0.5.4
build_docs() {
  local mdbook="$DATA/tools/bin/mdbook" stage="$DATA/docs-build"
  if [ ! -x "$mdbook" ] || ! "$mdbook" --version | grep -q "v$MDBOOK_VERSION"; then
    say "installing mdBook $MDBOOK_VERSION into $DATA/tools (once)"
    CARGO_TARGET_DIR="$DATA/tools/build" cargo install mdbook --locked --no-default-features \
      --version "$MDBOOK_VERSION" --root "$DATA/tools" --quiet || die "could not install mdBook"
    rm -rf "$DATA/tools/build"
  fi
  say "building the manual into $DATA/book"
  rm -rf "$stage" && cp -r "$ROOT/docs" "$stage"
  mkdir -p "$stage/src/reference"
  "${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchyard" print-openapi > "$stage/src/reference/openapi.json"
  cp "$ROOT/graphql/schema.graphql" "$stage/src/reference/schema.graphql"
  "$mdbook" build "$stage" --dest-dir "$DATA/book" >/dev/null 2>"$DATA/mdbook.log" \
    || { cat "$DATA/mdbook.log" >&2; die "the manual did not build"; }
  ! grep -q WARN "$DATA/mdbook.log" || { cat "$DATA/mdbook.log" >&2; die "the manual built with warnings"; }
}

# The owner URL of database $1 (for migrations) and its app-role URL (for the services).
set_urls() {
  local db=$1
  if [ -n "${DATABASE_URL:-}" ]; then
    export DATABASE_URL="${DATABASE_URL%/*}/$db"
    [ -n "${APP_DATABASE_URL:-}" ] || die "set APP_DATABASE_URL too (the switchyard_app role's URL)"
    export APP_DATABASE_URL="${APP_DATABASE_URL%/*}/$db"
  else
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db"
    export APP_DATABASE_URL="postgres://switchyard_app@127.0.0.1:$PG_PORT/$db"
  fi
}

jwt_secret() {
  mkdir -p "$DATA"
  [ -s "$DATA/jwt_secret" ] || (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n=/+' > "$DATA/jwt_secret")
  cat "$DATA/jwt_secret"
}

# The key that seals tenants' payment provider keys in the database: 32 random bytes, kept with the data.
secrets_key() {
  mkdir -p "$DATA"
  [ -s "$DATA/secrets_key" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n' > "$DATA/secrets_key")
  cat "$DATA/secrets_key"
}

up() {
  ensure_packages
  prepare_ocpp_peer
  prepare_s3_server
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  start_postgres
  start_mosquitto
  start_mail_sink "$DATA/mail"
  # The workers deliver the demo's email to the sink unless you set SMTP_HOST to a server of your own.
  if [ -z "${SMTP_HOST:-}" ]; then
    export SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_SINK_PORT" SMTP_SECURITY=none
    export SMTP_FROM_ADDRESS="${SMTP_FROM_ADDRESS:-noreply@demo.switchyard.test}"
  fi
  start_s3 switchyard-documents
  set_urls switchyard
  export JWT_SECRET="${JWT_SECRET:-$(jwt_secret)}"
  export SECRETS_KEY="${SECRETS_KEY:-$(secrets_key)}"
  export LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8080}"
  say "building"
  (cd "$ROOT" && cargo build --bins)
  if [ "${SWITCHYARD_CONSOLE:-on}" != off ]; then
    build_console
    export CONSOLE_DIR="$ROOT/console/dist"
  fi
  local bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
  say "migrating"
  "$bin/switchyard" migrate
  say "seeding the demo tenant"
  local logins credentials="$DATA/demo-credentials.json"
  # The demo router's login, known to the bridge and the simulated router only (never to the cloud).
  [ -s "$credentials" ] || (umask 077; printf '{"demo-router": {"username": "switchyard", "password": "%s"}}\n' \
    "$(head -c 18 /dev/urandom | base64 | tr -d '\n=/+')" > "$credentials")
  logins=$("$bin/switchyard" seed-demo --devices "$DEVICES_PORT" --bridge-env "$DATA/demo-bridge.env")
  "$bin/switchyard-workers" & CHILDREN+=($!)
  "$bin/switchyard" serve & CHILDREN+=($!)
  local url="http://$LISTEN_ADDR"
  for _ in $(seq 1 100); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "$url/readyz" >/dev/null || die "the API did not become ready; see the log above"
  start_demo_venue "$bin" "$credentials"
  cat <<MSG

  Switchyard is running.
    Web console:                      $url/console/   (${CONSOLE_DIR:-not built: SWITCHYARD_CONSOLE=off})
    GraphQL (GraphiQL in a browser):  $url/graphql
    REST + OpenAPI:                   $url/api/v1/openapi.json
    Health / metrics:                 $url/readyz   $url/metrics
    Mail (invitations, codes, receipts, SOS) from the demo, one .eml and one .json per message:
                                      $DATA/mail/   (SMTP sink on 127.0.0.1:$SMTP_SINK_PORT)
    Documents (receipts, invoices, reports): ${S3_ENDPOINT:-AWS}/${S3_BUCKET} (in memory; download links from
      sessionReceipt, invoice { download }, GET /api/v1/reports/{id})
  $logins
  Demo arcade: its edge bridge is connected (metrics: http://127.0.0.1:$((DEVICES_PORT + 4))/metrics); simulated
  devices print their switches here (PS5-01 and Pinball on Shelly plugs, PC-03 behind the MikroTik, Karaoke
  Room A on Tasmota; PC-01/PC-02 run agents). The harbour hub's powerbank cabinet runs on the cabinet simulator
  behind the hub's bridge (its ejects and returns print here as JSON lines). The hub's "Charger 1" (CP-001) is a
  simulated OCPP 1.6 charger on $url/ocpp/CP-001: start a session on it (startSession) and it charges at 7.4 kW.
  Sign in:  curl -s $url/api/v1/auth/login -H 'content-type: application/json' \\
              -d '{"email":"owner@demo.switchyard.test","password":"Neon-Arcade-42"}'
  Ctrl-C stops everything.

MSG
  wait -n "${CHILDREN[@]}" || true
}

# The demo arcade's venue side: its simulated devices, its edge bridge (token and agent keys from the seed), and an
# agent simulator on each agent PC; and the hub's simulated powerbank cabinet with the hub's bridge.
start_demo_venue() {
  local bin=$1 credentials=$2 agent_port=$((DEVICES_PORT + 3)) pair
  # shellcheck disable=SC1091
  . "$DATA/demo-bridge.env"
  # The simulated devices, and the harbour hub's EV charger connected straight to the API's OCPP endpoint.
  "$bin/demo-devices" --base "$DEVICES_PORT" --mqtt "$MQTT_URL" --credentials "$credentials" \
    --charger-url "ws://$LISTEN_ADDR/ocpp/$DEMO_CHARGER_ID" --charger-id "$DEMO_CHARGER_ID" \
    --charger-password "$DEMO_CHARGER_PASSWORD" & CHILDREN+=($!)
  BRIDGE_TOKEN="$BRIDGE_TOKEN" BRIDGE_CLOUD_URL="ws://$LISTEN_ADDR/edge/v1/tunnel" \
    BRIDGE_JOURNAL="$DATA/demo-bridge-journal.jsonl" BRIDGE_AGENT_LISTEN="127.0.0.1:$agent_port" \
    BRIDGE_MQTT_URL="$MQTT_URL" BRIDGE_CREDENTIALS="$credentials" \
    BRIDGE_METRICS_LISTEN="127.0.0.1:$((DEVICES_PORT + 4))" "$bin/edge-bridge" & CHILDREN+=($!)
  for pair in $DEMO_AGENTS; do
    "$bin/edge-bridge" agent-sim --url "ws://127.0.0.1:$agent_port/ws/agent/${pair%%=*}" --key "${pair#*=}" \
      --retry-ms 2000 & CHILDREN+=($!)
  done
  # The harbour hub's powerbank cabinet: simulated on the same broker (its powerbanks as the database has them),
  # driven by the hub's own bridge.
  "$bin/edge-bridge" cabinet-sim --mqtt "$MQTT_URL" --cabinet "$DEMO_CABINET" --charge-ms 10000 & CHILDREN+=($!)
  BRIDGE_TOKEN="$HUB_BRIDGE_TOKEN" BRIDGE_CLOUD_URL="ws://$LISTEN_ADDR/edge/v1/tunnel" \
    BRIDGE_JOURNAL="$DATA/demo-hub-bridge-journal.jsonl" BRIDGE_MQTT_URL="$MQTT_URL" BRIDGE_METRICS_LISTEN=off \
    "$bin/edge-bridge" & CHILDREN+=($!)
}

test_suite() {
  export PG_EXTRA_OPTS="-c fsync=off -c synchronous_commit=off"
  # The console's tests are part of the suite.
  SWITCHYARD_CONSOLE=on
  ensure_packages
  prepare_ocpp_peer
  prepare_s3_server
  trap cleanup EXIT
  # Tests that change cluster-wide things (a role's password) do so only on the private cluster.
  [ -n "${DATABASE_URL:-}" ] || export TEST_PRIVATE_CLUSTER=1
  start_postgres
  start_mosquitto
  export TEST_MQTT_URL="$MQTT_URL"
  start_redis
  # A fresh mail folder per run; the tests read what the sink received there.
  rm -rf "$DATA/test-mail"
  # A private CA and a certificate for 127.0.0.1 signed by it, so the tests can take the STARTTLS path (made once,
  # kept in .data; the tests trust the CA as SMTP_CA_FILE would).
  local tls="$DATA/test-mail-tls"
  if [ ! -s "$tls/ca.pem" ] || [ ! -s "$tls/cert.pem" ]; then
    rm -rf "$tls" && mkdir -p "$tls"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
      > "$tls/server.ext"
    { openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Switchyard test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" \
      && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$tls/key.pem" -out "$tls/server.csr" \
      && openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 3650 -extfile "$tls/server.ext" -out "$tls/cert.pem"; } >/dev/null 2>&1 \
      || die "openssl could not make the test SMTP certificate"
  fi
  start_mail_sink "$DATA/test-mail" --username switchyard-tests --password sink-password-1 \
    --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem"
  export TEST_SMTP_CA="$tls/ca.pem"
  export TEST_SMTP_PORT="$SMTP_SINK_PORT" TEST_MAIL_DIR="$DATA/test-mail"
  export TEST_SMTP_USERNAME=switchyard-tests TEST_SMTP_PASSWORD=sink-password-1
  start_s3 switchyard-test
  set_urls switchyard_test
  say "preparing a fresh test database"
  local admin="${DATABASE_URL%/*}/postgres"
  local db
  for db in $(psql -qAt "$admin" -c "select datname from pg_database where datname like 'switchyard\_test%'"); do
    psql -q -v ON_ERROR_STOP=1 "$admin" -c "drop database $db with (force)" >/dev/null
  done
  (cd "$ROOT" && cargo build --workspace --bins)
  "${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchyard" migrate
  export TEST_DATABASE_URL="$DATABASE_URL" TEST_APP_DATABASE_URL="$APP_DATABASE_URL"
  # pg_dump and pg_restore of the same Postgres version as the cluster (the backup test).
  TEST_PG_BIN="$(pg_bin)"; export TEST_PG_BIN
  build_console test
  export TEST_CONSOLE_ROOT="$ROOT/console" TEST_SCREENSHOT_DIR="$DATA/screenshots"
  if [ $# -eq 0 ]; then
    check_deploy
    build_docs
    say "checking formatting and lints"
    (cd "$ROOT" && cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings)
  fi
  say "running the test suite"
  (cd "$ROOT" && cargo test --workspace --no-fail-fast -- "$@")
}

# For developers: the benchmark programs (release build), figures printed for the manual's Figures chapter.
bench() {
  ensure_packages
  prepare_ocpp_peer
  if [ "${1:-}" = bridge ]; then
    shift
    (cd "$ROOT" && cargo build --release -p edge-bridge --bins)
    "${CARGO_TARGET_DIR:-$ROOT/target}/release/bench-bridge" "$@"
    return
  fi
  trap cleanup EXIT
  start_postgres
  set_urls switchyard_bench
  # SWITCHYARD_BENCH_PROFILE=debug runs the debug build the test command already made (no release build; figures
  # are then a lower bound, worth it on a busy machine). The manual's figures name the build they were taken with.
  local bin
  if [ "${SWITCHYARD_BENCH_PROFILE:-release}" = debug ]; then
    (cd "$ROOT" && cargo build --bins)
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
  else
    (cd "$ROOT" && cargo build --release --bins)
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  fi
  case "${1:-billing}" in
    billing) shift || true; "$bin/switchyard-workers" bench-billing "$@" ;;
    sessions) shift; "$bin/bench-sessions" "$@" ;;
    load) shift; ulimit -n "$(ulimit -Hn)"
      # Two API processes behind a balancer, two workers, edge bridges and simulated plugs, against pgbench.
      start_redis
      REDIS_URL="$TEST_REDIS_URL" PGBENCH="$(pg_bin)/pgbench" "$bin/bench-load" "$@" ;;
    tunnels) shift; ulimit -n "$(ulimit -Hn)"
      # Once with wake-ups through Postgres notify (one replica), once through Redis (several). Redis starts first:
      # 10,000 loopback connections leave many ports of the kernel's ephemeral range busy for a while.
      start_redis
      REDIS_URL="" "$bin/bench-tunnels" "$@"
      REDIS_URL="$TEST_REDIS_URL" "$bin/bench-tunnels" "$@" ;;
    live) shift; ulimit -n "$(ulimit -Hn)"
      # Two API replicas announcing through Redis (as in production with several replicas).
      start_redis
      REDIS_URL="$TEST_REDIS_URL" "$bin/bench-live" "$@" ;;
    ocpp) shift; ulimit -n "$(ulimit -Hn)"
      # 10,000 chargers on the API, then the same load on the Python central system (tests/ocpp).
      "$bin/bench-ocpp" "$@" ;;
    receipts) shift
      # Generation alone, then generation and upload to the local S3-compatible server.
      prepare_s3_server
      start_s3 switchyard-bench
      "$bin/bench-receipts" "$@" ;;
    analytics) shift
      # 1,000,000 sessions in one tenant, the workers' rollup, then every analytics query's p50/p99.
      "$bin/bench-analytics" "$@" ;;
    outbox) shift
      # Emails through the workers' delivery pass to the real SMTP sink, counted where the sink writes them.
      rm -rf "$DATA/bench-mail"
      start_mail_sink "$DATA/bench-mail"
      SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_SINK_PORT" SMTP_SECURITY=none SMTP_FROM_ADDRESS=bench@switchyard.test \
        BENCH_MAIL_DIR="$DATA/bench-mail" "$bin/bench-outbox" "$@" ;;
    console) shift
      # The live floor of a 200-station venue in Chromium: render time and lag under 50 changes a second.
      build_console
      CONSOLE_ROOT="$ROOT/console" "$bin/bench-console" "$@" ;;
    *) die "bench what? billing | sessions | load | tunnels | live | bridge | ocpp | receipts | analytics | outbox | console" ;;
  esac
}

docs() {
  command -v cargo >/dev/null || die "no Rust toolchain: install rustup (https://rustup.rs) and run this again"
  (cd "$ROOT" && cargo build --bin switchyard)
  build_docs
  say "the manual is in $DATA/book/index.html"
}

case "${1:-}" in
  up) up ;;
  docs) docs ;;
  test) shift; test_suite "$@" ;;
  bench) shift; bench "$@" ;;
  *) echo "usage: $0 up | test [test-name-filter] | docs | bench billing|sessions|load|tunnels|live|bridge|ocpp|receipts|analytics|outbox|console [options]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A team MLflow tracking server: PostgreSQL as the backend store, artifacts served by the
# server itself (--artifacts-destination: clients need no shared disk). See docs/deploy.md.
#
#   scripts/server.sh start     # or: make server
#   scripts/server.sh status
#   scripts/server.sh stop      # or: make server-stop
#
# By default everything lives under <project>/.server/: a PostgreSQL cluster created with
# initdb (pg/, listening on 127.0.0.1 only, password in pg.password), the artifacts
# (artifacts/), pid files and logs. Settings (environment variables):
#   SERVER_HOST=127.0.0.1       the interface the MLflow server binds to (0.0.0.0: all)
#   SERVER_PORT=5001            its port (conf/tracking/server.yaml points there)
#   SERVER_ALLOWED_HOSTS=...    --allowed-hosts, needed when clients use another host name
#                               than localhost or a private IP, e.g. mlflow.example.org:5001
#   SERVER_CORS_ORIGINS=...     --cors-allowed-origins (web apps on other origins)
#   SERVER_WORKERS=2            server worker processes
#   SERVER_ENABLE_JOBS=false    MLflow's job runner (GenAI scorers; ~8 more processes)
#   SERVER_DB_URI=...           use this existing database instead of a local cluster,
#                               e.g. postgresql://mlflow:secret@db.example.org:5432/mlflow
#   SERVER_ARTIFACTS=...        the artifact destination (a folder, or s3://..., gs://...)
#   SERVER_DIR=<project>/.server    SERVER_PGDATA=$SERVER_DIR/pg (its log: postgres.log in it)
#   SERVER_PG_PORT=(a free port, chosen once and kept in $SERVER_DIR/pg.port)
#   SERVER_START_TIMEOUT=180    seconds to wait for the server to answer /health
# PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the 'postgres' user.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SERVER_DIR:-$ROOT/.server}"
PGDATA_DIR="${SERVER_PGDATA:-$STATE/pg}"
HOST="${SERVER_HOST:-127.0.0.1}"
PORT="${SERVER_PORT:-5001}"
WORKERS="${SERVER_WORKERS:-2}"
ARTIFACTS="${SERVER_ARTIFACTS:-$STATE/artifacts}"
START_TIMEOUT="${SERVER_START_TIMEOUT:-180}"
MLFLOW_PID="$STATE/mlflow.pid"
MLFLOW_LOG="$STATE/mlflow.log"
PG_LOG="$PGDATA_DIR/postgres.log" # where the postgres user can write
PG_PORT_FILE="$STATE/pg.port"
PG_PASS_FILE="$STATE/pg.password"
DB_NAME=mlflow

if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
if [[ -x "$ROOT/.venv/bin/mlflow" ]]; then MLFLOW="$ROOT/.venv/bin/mlflow"; else MLFLOW="$(command -v mlflow || true)"; fi

die() { echo "server: $*" >&2; exit 1; }
say() { echo "server: $*"; }

# -- PostgreSQL ---------------------------------------------------------------------------
pg_bin() { # the folder with initdb: PATH, then Debian's /usr/lib/postgresql/<version>/bin
    local found
    if found="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$found")"
        return
    fi
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n1 || true)"
    [[ -n "$found" && -x "$found/initdb" ]] || die "PostgreSQL's initdb was found neither on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install -y postgresql), or give an existing database with SERVER_DB_URI=postgresql://user:password@host:5432/mlflow"
    echo "$found"
}

# Run a PostgreSQL server program: as the 'postgres' user when we are root (it refuses root).
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root and PostgreSQL refuses root: create a 'postgres' user (Debian's postgresql package does)"
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() { # host port
    "$PY" - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
}

pg_port() { cat "$PG_PORT_FILE"; }

pg_running() {
    [[ -f "$PGDATA_DIR/postmaster.pid" ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

pg_init() {
    local port pwfile
    port="${SERVER_PG_PORT:-$(free_port)}"
    say "creating a PostgreSQL cluster in $PGDATA_DIR (port $port, 127.0.0.1 only)"
    mkdir -p "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$PG_PASS_FILE")
    pwfile="$(mktemp)" # mode 600
    cp "$PG_PASS_FILE" "$pwfile"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$PGDATA_DIR" "$pwfile"
        as_pg test -w "$PGDATA_DIR" || {
            rm -f "$pwfile"
            die "the postgres user cannot reach $PGDATA_DIR (a parent folder is not searchable by it): set SERVER_PGDATA to a folder it can reach, e.g. /var/lib/mlplab/pg"
        }
    fi
    if ! as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" \
        --auth-host=scram-sha-256 --auth-local=peer -E UTF8 --locale=C >"$STATE/initdb.log" 2>&1; then
        rm -f "$pwfile"
        cat "$STATE/initdb.log" >&2
        die "initdb failed (log: $STATE/initdb.log)"
    fi
    rm -f "$pwfile"
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# mlplab (scripts/server.sh): TCP on 127.0.0.1 only, no Unix socket
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
EOF
    echo "$port" >"$PG_PORT_FILE"
}

pg_start() {
    PGBIN="$(pg_bin)"
    if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
        pg_init
    fi
    [[ -f "$PG_PORT_FILE" && -f "$PG_PASS_FILE" ]] || die "$PGDATA_DIR exists but $PG_PORT_FILE or $PG_PASS_FILE is missing: remove $STATE to start afresh"
    export PGPASSWORD
    PGPASSWORD="$(cat "$PG_PASS_FILE")"
    if pg_running; then
        say "PostgreSQL already running on 127.0.0.1:$(pg_port)"
    else
        if port_in_use 127.0.0.1 "$(pg_port)"; then
            die "port $(pg_port) (PostgreSQL, from $PG_PORT_FILE) is taken by another program"
        fi
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null || {
            tail -n 20 "$PG_LOG" >&2
            die "PostgreSQL did not start (log: $PG_LOG)"
        }
        say "PostgreSQL started on 127.0.0.1:$(pg_port)"
    fi
    local exists
    exists="$("$PGBIN/psql" -h 127.0.0.1 -p "$(pg_port)" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" || die "cannot connect to PostgreSQL on 127.0.0.1:$(pg_port)"
    if [[ "$exists" != 1 ]]; then
        "$PGBIN/psql" -h 127.0.0.1 -p "$(pg_port)" -U postgres -d postgres -qc "CREATE DATABASE $DB_NAME" >/dev/null
        say "database $DB_NAME created"
    fi
    # no password here: the server gets it from PGPASSWORD (exported above)
    DB_URI="postgresql+psycopg2://postgres@127.0.0.1:$(pg_port)/$DB_NAME"
}

pg_stop() {
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] || return 0
    PGBIN="$(pg_bin)"
    if pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null
        say "PostgreSQL stopped"
    fi
}

# -- the MLflow server --------------------------------------------------------------------
mlflow_pid() { # the pid in the pid file, if that process is alive and is an mlflow server
    [[ -f "$MLFLOW_PID" ]] || return 1
    local pid
    pid="$(cat "$MLFLOW_PID")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow server"; then
        echo "$pid"
    else
        rm -f "$MLFLOW_PID"
        return 1
    fi
}

probe_host() { # the address to poll: the bound one, or loopback for a wildcard
    case "$HOST" in 0.0.0.0 | "::" | "[::]") echo 127.0.0.1 ;; *) echo "$HOST" ;; esac
}

healthy() {
    "$PY" - "http://$(probe_host):$PORT/health" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

check_db() { # fail in seconds (mlflow server would retry for minutes) on a dead database
    SERVER_CHECK_URI="$1" "$PY" - <<'EOF'
import os, sys
uri = os.environ["SERVER_CHECK_URI"]
prefix = "postgresql+psycopg2://"
if not uri.startswith(prefix):
    sys.exit(0)
import psycopg2
try:
    psycopg2.connect("postgresql://" + uri[len(prefix):], connect_timeout=5).close()
except Exception as exc:
    text = str(exc).strip()
    print(text.splitlines()[0] if text else type(exc).__name__)
    sys.exit(1)
EOF
}

usage_hint() {
    local host uri stop="make server-stop"
    case "$HOST" in
        0.0.0.0 | "::" | "[::]") host="$(hostname -f 2>/dev/null || hostname)" ;;
        *) host="$HOST" ;;
    esac
    uri="http://$host:$PORT"
    [[ -n "${SERVER_DIR:-}" ]] && stop="SERVER_DIR=$STATE bash scripts/server.sh stop"
    echo
    echo "MLflow tracking server: $uri  (UI and REST API)"
    echo "  backend store: $DB_URI_SHOWN"
    echo "  artifacts:     $ARTIFACTS (served by the server: clients need no shared disk)"
    if [[ "$uri" == http://127.0.0.1:5001 ]]; then
        echo "  log to it:     make run ARGS=\"tracking=server\""
        echo "                 make sweep ARGS=\"tracking=server\""
    else
        echo "  log to it:     make run ARGS=\"tracking=server tracking.uri=$uri\""
        echo "                 make sweep ARGS=\"tracking=server tracking.uri=$uri\""
    fi
    if [[ -n "${SERVER_DB_URI:-}" ]]; then
        echo "  log:           $MLFLOW_LOG"
    else
        echo "  logs:          $MLFLOW_LOG, $PG_LOG"
    fi
    echo "  stop it:       $stop"
}

start() {
    mkdir -p "$STATE"
    [[ -n "$MLFLOW" ]] || die "mlflow not found: run 'make server' (it installs the locked [server] extra)"
    "$PY" -c 'import psycopg2' 2>/dev/null || die "psycopg2 is missing: run 'make server' (it installs the locked [server] extra)"
    local pid
    if pid="$(mlflow_pid)"; then
        if healthy; then
            say "already running (pid $pid)"
        else
            say "already started (pid $pid) but not answering yet on $(probe_host):$PORT; see $MLFLOW_LOG"
        fi
        DB_URI_SHOWN="$(cat "$STATE/backend.uri" 2>/dev/null || echo '?')"
        usage_hint
        return 0
    fi
    if port_in_use "$(probe_host)" "$PORT"; then
        die "port $PORT is taken by another program: choose another with SERVER_PORT=... (and tracking.uri=http://127.0.0.1:<port>)"
    fi

    local db_uri
    if [[ -n "${SERVER_DB_URI:-}" ]]; then
        db_uri="$SERVER_DB_URI"
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the [server] extra ships psycopg2.
        case "$db_uri" in
            postgresql://*) db_uri="postgresql+psycopg2://${db_uri#postgresql://}" ;;
            postgres://*) db_uri="postgresql+psycopg2://${db_uri#postgres://}" ;;
        esac
    else
        pg_start
        db_uri="$DB_URI"
    fi
    # shown without its password
    DB_URI_SHOWN="$(sed -E 's#//([^:@/]+):[^@/]*@#//\1:***@#' <<<"$db_uri")"
    local why
    why="$(check_db "$db_uri" 2>&1)" || die "cannot connect to the backend store $DB_URI_SHOWN: $why"
    echo "$DB_URI_SHOWN" >"$STATE/backend.uri"

    case "$ARTIFACTS" in
        *://*) ;;
        *)
            mkdir -p "$ARTIFACTS"
            ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
            ;;
    esac
    # The backend URI (with any password in it) goes through the environment, not argv.
    local args=(server --artifacts-destination "$ARTIFACTS" --host "$HOST" --port "$PORT"
        --workers "$WORKERS")
    [[ -n "${SERVER_ALLOWED_HOSTS:-}" ]] && args+=(--allowed-hosts "$SERVER_ALLOWED_HOSTS")
    [[ -n "${SERVER_CORS_ORIGINS:-}" ]] && args+=(--cors-allowed-origins "$SERVER_CORS_ORIGINS")

    say "starting mlflow server on $HOST:$PORT (log: $MLFLOW_LOG)"
    local t0=$SECONDS
    # MLflow's job runner (huey consumers for GenAI scorers) is not needed to track runs and
    # costs ~8 Python processes: off unless SERVER_ENABLE_JOBS=true. No usage telemetry.
    # setsid: the server leads its own process group, which `stop` ends as a whole.
    MLFLOW_BACKEND_STORE_URI="$db_uri" \
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${SERVER_ENABLE_JOBS:-false}" \
        MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}" \
        setsid nohup "$MLFLOW" "${args[@]}" >"$MLFLOW_LOG" 2>&1 </dev/null &
    echo $! >"$MLFLOW_PID"
    pid="$(cat "$MLFLOW_PID")"
    while ! healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$MLFLOW_PID"
            tail -n 30 "$MLFLOW_LOG" >&2
            die "mlflow server exited (log: $MLFLOW_LOG)"
        fi
        if ((SECONDS - t0 > START_TIMEOUT)); then
            tail -n 30 "$MLFLOW_LOG" >&2
            stop_mlflow
            die "mlflow server did not answer http://$(probe_host):$PORT/health within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    say "ready in $((SECONDS - t0)) s (pid $pid)"
    usage_hint
}

stop_mlflow() {
    local pid
    pid="$(mlflow_pid)" || {
        say "mlflow server not running"
        return 0
    }
    # The server leads its own process group (setsid): end the group, workers included.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$MLFLOW_PID"
    say "mlflow server stopped"
}

stop() {
    stop_mlflow
    pg_stop
}

status() {
    local pid rc=0
    if pid="$(mlflow_pid)"; then
        if healthy; then
            say "mlflow server running (pid $pid) at http://$(probe_host):$PORT"
        else
            say "mlflow server process $pid alive but not answering on $(probe_host):$PORT"
            rc=1
        fi
    else
        say "mlflow server not running"
        rc=3
    fi
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
        PGBIN="$(pg_bin)"
        if pg_running; then
            say "PostgreSQL running on 127.0.0.1:$(pg_port) ($PGDATA_DIR)"
        else
            say "PostgreSQL not running ($PGDATA_DIR)"
        fi
    fi
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart)
        stop
        start
        ;;
    *)
        echo "usage: $0 start|stop|status|restart" >&2
        exit 2
        ;;
esac

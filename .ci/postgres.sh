#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster for the @pytest.mark.postgres tests: trust auth, 127.0.0.1 only, data in /tmp.
#   bash .ci/postgres.sh start    idempotent; prints the test database's URL on stdout
#   bash .ci/postgres.sh stop     stops the server and deletes its data directory
#   bash .ci/postgres.sh status   exit status 0 while the server runs
# OPTUNA_NAS_PGPORT (default 5433) picks the port; the data directory follows from it, so several can coexist.
set -euo pipefail
port=${OPTUNA_NAS_PGPORT:-5433}
dir=/tmp/optuna-nas-pg-$port
db=optuna_nas_test
bin=$(find /usr/lib/postgresql -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n1 | xargs -r dirname)
if [[ -z $bin ]]; then
    echo "postgres.sh: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)" >&2
    exit 1
fi
# The postgres user may not be allowed into the caller's working directory (pg_ctl warns about it).
cd /tmp

# The server refuses to run as root, so root runs it as the postgres user, which then owns the data directory.
as_owner() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_() { "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
status() { [[ -f $dir/data/PG_VERSION ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

start() {
    if ! status; then
        rm -rf "$dir"
        mkdir -p "$dir"
        if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
        if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
            cat "$dir/initdb.log" >&2
            exit 1
        fi
        # No durability needed for a throwaway cluster; fsync off keeps CREATE/DROP DATABASE fast on slow CI disks.
        local opts="-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null; then
            cat "$dir/server.log" >&2
            exit 1
        fi
    fi
    if [[ -z $(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
        psql_ -c "CREATE DATABASE $db"
    fi
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the dev extra installs psycopg2, so name it.
    echo "postgresql+psycopg2://postgres@127.0.0.1:$port/$db"
}

stop() {
    if status; then as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; fi
    rm -rf "$dir"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

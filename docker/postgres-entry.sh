#!/bin/sh
# Entry point of docker/Dockerfile.postgres. First start on an empty volume: initdb with the
# password file that `make cluster-up` copied into the container before starting it (never an
# environment variable, which `docker inspect` shows), one database per name in
# POSTGRES_DATABASES, password (scram) login over the network. A container created on data that
# exists (`make cluster-down` then up, or another checkout's volume) gets the password file too,
# and the role takes that password: the file is what every other part of this cluster was given,
# so a volume initialised with other secrets would otherwise lock MLflow out. The password file is
# removed once used; a container started again (not created) finds none and only runs the server.
set -eu
: "${PGDATA:?}" "${POSTGRES_BIN:?}"
SECRET=/var/lib/postgresql/secrets/password
USER_NAME=${POSTGRES_USER:-clearrec}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -s "$SECRET" ] || { echo "postgres-entry: empty data folder and no password file at $SECRET" >&2; exit 1; }
    "$POSTGRES_BIN/initdb" -D "$PGDATA" --username="$USER_NAME" --pwfile="$SECRET" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    # The container's network is the project's private bridge; every client still needs the password.
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    "$POSTGRES_BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    for db in $POSTGRES_DATABASES; do
        "$POSTGRES_BIN/psql" -v ON_ERROR_STOP=1 -q -U "$USER_NAME" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
    done
    "$POSTGRES_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entry: initialised $PGDATA with databases: $POSTGRES_DATABASES" >&2
elif [ -s "$SECRET" ]; then
    password=$(cat "$SECRET")
    case "$password" in
        *[!A-Za-z0-9_-]*) echo "postgres-entry: the password file holds characters other than A-Z a-z 0-9 _ -" >&2; exit 1 ;;
    esac
    # No network while the password is set; the statement goes in on stdin, never in argv.
    "$POSTGRES_BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    "$POSTGRES_BIN/psql" -v ON_ERROR_STOP=1 -q -U "$USER_NAME" -d postgres >/dev/null <<SQL
ALTER ROLE "$USER_NAME" PASSWORD '$password';
SQL
    "$POSTGRES_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entry: the password of $USER_NAME is the one this container was created with" >&2
fi
rm -f "$SECRET"
exec "$POSTGRES_BIN/postgres" -D "$PGDATA" -c listen_addresses='*'

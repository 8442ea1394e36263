#!/usr/bin/env bash
# Entrypoint of the postgres stand-in image, written from the official image's documented
# behaviour, as far as charts/postgres uses it:
#
#   arguments starting with "-"  run as `postgres ARGS` (the chart passes `-c name=value`s)
#   `postgres ...` on a data directory without PG_VERSION initialises it first:
#     initdb as POSTGRES_USER (default postgres) with POSTGRES_PASSWORD; trust on the socket
#       and loopback (inside the container), scram-sha-256 from every other host
#     a temporary server on the socket only, with the same arguments; POSTGRES_DB (default
#       POSTGRES_USER) created
#     /docker-entrypoint-initdb.d/* in name order: *.sh executed if executable, sourced if
#       not; *.sql through psql as POSTGRES_USER into POSTGRES_DB; anything else ignored
#     the temporary server stopped; a data directory that holds a database is left alone,
#       so the scripts run once, on first initialisation only
#   then exec the server, so that it is PID 1 and gets the stop signal itself.
# Anything else (`bash`, `psql ...`) is exec'd as it is.
set -Eeuo pipefail

log() { printf '%s: %s\n' "$0" "$*"; }
die() { printf '%s: error: %s\n' "$0" "$*" >&2; exit 1; }

# pg_ctl hands its -o string to /bin/sh (dash): quote each argument for that shell.
sh_quote() {
	local arg out=""
	for arg in "$@"; do
		out+="'${arg//\'/\'\\\'\'}' "
	done
	printf '%s' "$out"
}

psql_init() {
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

initialise() {
	[ -n "${POSTGRES_PASSWORD:-}" ] || die "the data directory $PGDATA is empty and \
POSTGRES_PASSWORD is not set: it is the password of the superuser $POSTGRES_USER, required \
to initialise the database"
	log "initialising $PGDATA (superuser $POSTGRES_USER, locale ${LANG:-C})"
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host=trust -D "$PGDATA"
	# Loopback stays trusted (initdb's lines come first); everything else needs a password.
	printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

	# The temporary server takes the same settings but listens on the socket only, so that
	# nothing outside (and no readiness probe on 127.0.0.1) sees a half-initialised database.
	pg_ctl -D "$PGDATA" -w \
		-o "$(sh_quote "$@" -c listen_addresses= -p "${PGPORT:-5432}")" start

	psql_init --dbname postgres --set db="$POSTGRES_DB" <<-'SQL'
		SELECT format('CREATE DATABASE %I', :'db')
		WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
	SQL

	local f
	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					log "running $f"
					"$f"
				else
					log "sourcing $f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql)
				log "running $f"
				psql_init --dbname "$POSTGRES_DB" -f "$f"
				;;
			*) log "ignoring $f" ;;
		esac
	done

	pg_ctl -D "$PGDATA" -m fast -w stop
	log "PostgreSQL init process complete; ready for start up."
}

if [[ "${1:-}" == -* ]]; then
	set -- postgres "$@"
fi

if [ "${1:-}" = postgres ]; then
	[ "$(id -u)" != 0 ] || die "running as root: run as uid 999 (postgres), as the chart does"
	getent passwd "$(id -u)" >/dev/null \
		|| die "uid $(id -u) has no passwd entry: run as uid 999 (postgres), as the chart does"
	export POSTGRES_USER="${POSTGRES_USER:-postgres}"
	export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
	export PGDATA="${PGDATA:?}"

	mkdir -p "$PGDATA"
	chmod 00700 "$PGDATA" || die "cannot make $PGDATA private to uid $(id -u)"
	# A socket directory mounted from outside may not be ours to chmod; it only needs to be
	# writable.
	mkdir -p /var/run/postgresql
	chmod 03775 /var/run/postgresql 2>/dev/null || :

	if [ -s "$PGDATA/PG_VERSION" ]; then
		log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
	else
		initialise "${@:2}"
	fi
fi

exec "$@"

#!/usr/bin/env bash
# Throwaway PostgreSQL for tests: initdb into a fresh temp dir (trust auth, durability off), listen
# on a free 127.0.0.1 port, print the environment to use it.
#
#   env=$(scripts/pg-throwaway.sh start) && eval "$env"   # exports DATABASE_URL and KEYLEDGER_PG_DIR
#   scripts/pg-throwaway.sh stop [DIR]                     # DIR defaults to $KEYLEDGER_PG_DIR
#
# Works as a normal user and as root (the server then runs as the `postgres` user via runuser).
# Progress goes to stderr; stdout carries only the `export` lines.
set -euo pipefail

FIRST_PORT=${KEYLEDGER_PG_FIRST_PORT:-55432}
PORT_TRIES=100
MARKER=.keyledger-throwaway

die() {
	echo "pg-throwaway: $*" >&2
	exit 1
}
say() { echo "pg-throwaway: $*" >&2; }

# Directory holding initdb/pg_ctl/postgres: PATH first, then the highest /usr/lib/postgresql/*/bin.
find_bindir() {
	local initdb dir
	if initdb=$(command -v initdb 2>/dev/null); then
		dir=$(dirname "$(readlink -f "$initdb")")
		if [[ -x $dir/pg_ctl && -x $dir/postgres ]]; then
			echo "$dir"
			return
		fi
	fi
	for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
		if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
			echo "$dir"
			return
		fi
	done
	die "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL (e.g. apt-get install postgresql) or set DATABASE_URL"
}

is_root() { [[ $(id -u) == 0 ]]; }

# runuser lives in /usr/sbin, which a non-login PATH may lack.
RUNUSER=$(command -v runuser 2>/dev/null || { [[ -x /usr/sbin/runuser ]] && echo /usr/sbin/runuser; } ||
	{ [[ -x /sbin/runuser ]] && echo /sbin/runuser; } || true)

# Runs a server binary as ourselves, or as `postgres` when root (initdb/postgres refuse root).
as_pg() {
	if is_root; then
		(cd / && "$RUNUSER" -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}

port_in_use() {
	# A successful TCP connect means something listens there.
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

psql_bin() {
	if [[ -x $1/psql ]]; then
		echo "$1/psql"
	elif command -v psql >/dev/null 2>&1; then
		command -v psql
	else
		die "psql not found (install postgresql-client)"
	fi
}

start() {
	local bindir dir port log psql out ok=""
	bindir=$(find_bindir)
	if is_root; then
		id -u postgres >/dev/null 2>&1 ||
			die "running as root needs the 'postgres' system user (created by the postgresql packages) to run the server"
		[[ -n $RUNUSER ]] || die "running as root needs runuser (util-linux)"
	fi

	dir=$(mktemp -d "${TMPDIR:-/tmp}/keyledger-pg.XXXXXX")
	touch "$dir/$MARKER"
	mkdir "$dir/data" "$dir/socket"
	chmod 700 "$dir/data"
	log=$dir/postgres.log
	touch "$log"
	if is_root; then
		chmod 755 "$dir"
		chown postgres: "$dir/data" "$dir/socket" "$log"
		as_pg test -w "$dir/data" ||
			die "user postgres cannot reach $dir (make ${TMPDIR:-/tmp} searchable or set TMPDIR)"
	fi

	say "initdb ($("$bindir/postgres" --version)) in $dir"
	if ! as_pg "$bindir/initdb" -D "$dir/data" --auth=trust -U postgres -E UTF8 --locale=C --no-sync \
		>"$dir/initdb.log" 2>&1; then
		cat "$dir/initdb.log" >&2
		die "initdb failed"
	fi

	# Tuned for tests: durability off, plenty of connections. No parallel query: it needs
	# /dev/shm space that containers often lack.
	cat >>"$dir/data/postgresql.conf" <<-EOF

		# pg-throwaway.sh
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$dir/socket'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		max_connections = 300
		shared_buffers = 256MB
		max_parallel_workers_per_gather = 0
		timezone = 'UTC'
	EOF

	for ((port = FIRST_PORT; port < FIRST_PORT + PORT_TRIES; port++)); do
		port_in_use "$port" && continue
		# Another process may grab the port between the check and the bind: then try the next one.
		if out=$(as_pg "$bindir/pg_ctl" start -w -t 60 -s -D "$dir/data" -l "$log" -o "-p $port" 2>&1); then
			ok=1
			break
		fi
		if grep -qiE 'could not (bind|create listen socket)|address already in use' "$log"; then
			: >"$log"
			continue
		fi
		echo "$out" >&2
		tail -n 30 "$log" >&2
		die "PostgreSQL failed to start (data kept in $dir)"
	done
	[[ -n $ok ]] || die "no free port in $FIRST_PORT..$((FIRST_PORT + PORT_TRIES - 1))"
	echo "$port" >"$dir/port"

	psql=$(psql_bin "$bindir")
	"$psql" "postgres://postgres@127.0.0.1:$port/postgres" -v ON_ERROR_STOP=1 -qAt \
		-c "create database keyledger" >&2 ||
		die "could not create database keyledger"

	say "PostgreSQL ready on 127.0.0.1:$port (stop with: $0 stop $dir)"
	echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$port/keyledger"
	echo "export KEYLEDGER_PG_DIR=$dir"
}

stop() {
	local dir=${1:-${KEYLEDGER_PG_DIR:-}} bindir
	[[ -n $dir ]] || die "usage: $0 stop DIR (or set KEYLEDGER_PG_DIR)"
	[[ -d $dir ]] || {
		say "$dir does not exist; nothing to stop"
		return 0
	}
	[[ -f $dir/$MARKER ]] || die "$dir was not created by pg-throwaway.sh; refusing to touch it"
	if [[ -f $dir/data/postmaster.pid ]]; then
		bindir=$(find_bindir)
		# Immediate shutdown: the data is thrown away anyway.
		as_pg "$bindir/pg_ctl" stop -w -t 30 -s -m immediate -D "$dir/data" >&2 ||
			say "pg_ctl stop failed (server already gone?)"
	fi
	rm -rf "$dir"
	say "stopped and removed $dir"
}

case ${1:-start} in
start) start ;;
stop) stop "${2:-}" ;;
-h | --help | help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (use start | stop DIR)" ;;
esac

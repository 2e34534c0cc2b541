#!/usr/bin/env bash
# The HTTP figures measured by an external load generator (wrk, a separate process) against a
# release `keyledger serve`, next to the pgbench baselines of the same PostgreSQL:
#   POST /user_management/users, 8 connections   vs  pgbench insert -c 8
#   GET  /user_management/users/{id}, 16 conns   vs  pgbench -S -c 16
# Usage: bench/wrk/run.sh postgres://postgres@127.0.0.1:5432/postgres [seconds]
# Needs wrk, pgbench and psql on PATH and `cargo build --release -p keyledger` done (or
# KEYLEDGER_BIN naming another build, for A/B runs). Loopback only.
set -euo pipefail
ADMIN_URL=${1:?admin database URL}
SECONDS_RUN=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KEYLEDGER_BIN:-$HERE/../../target/release/keyledger}
DB=kl_wrk_$$
BASE=${ADMIN_URL%/*}
URL=$BASE/$DB
PORT=${PORT:-18089}
psql "$ADMIN_URL" -qAt -c "create database $DB"
SERVER=""
cleanup() {
	[[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
	psql "$ADMIN_URL" -qAt -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
	psql "$ADMIN_URL" -qAt -c "drop database if exists ${DB}_pgb with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$BIN" --database-url "$URL" migrate >/dev/null
KEY=$("$BIN" --database-url "$URL" api-keys create --name wrk | grep -o 'sk_[A-Za-z0-9_]*' | head -1)
export KEY
"$BIN" --database-url "$URL" serve --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "== wrk POST /user_management/users, 8 connections, ${SECONDS_RUN}s"
wrk -t 2 -c 8 -d 2s -s "$HERE/post_users.lua" "http://127.0.0.1:$PORT" >/dev/null 2>&1
wrk -t 2 -c 8 -d "${SECONDS_RUN}s" --latency -s "$HERE/post_users.lua" "http://127.0.0.1:$PORT" 2>&1 | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|requests in"
IDS=$(mktemp)
psql "$URL" -qAt -c "select id from user_view order by random() limit 2000" >"$IDS"
export IDS
echo "== wrk GET /user_management/users/{id}, 16 connections, ${SECONDS_RUN}s"
wrk -t 2 -c 16 -d 2s -s "$HERE/get_users.lua" "http://127.0.0.1:$PORT" >/dev/null 2>&1
wrk -t 2 -c 16 -d "${SECONDS_RUN}s" --latency -s "$HERE/get_users.lua" "http://127.0.0.1:$PORT" 2>&1 | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|requests in"
rm -f "$IDS"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
echo "== pgbench baselines"
psql "$ADMIN_URL" -qAt -c "create database ${DB}_pgb"
pgbench -q -i -s 10 "$BASE/${DB}_pgb" >/dev/null 2>&1
psql "$BASE/${DB}_pgb" -qAt -c "create table ins (id bigserial primary key, body jsonb)"
INS=$(mktemp)
echo "insert into ins (body) values ('{\"email\": \"someone@example.com\", \"first_name\": \"A\", \"last_name\": \"B\", \"metadata\": {}}');" >"$INS"
printf 'pgbench insert -c 8: '; pgbench -n -M prepared -c 8 -j 2 -T "$SECONDS_RUN" -f "$INS" "$BASE/${DB}_pgb" 2>&1 | grep -E "^tps" 
printf 'pgbench -S -c 16: '; pgbench -n -S -M prepared -c 16 -j 2 -T "$SECONDS_RUN" "$BASE/${DB}_pgb" 2>&1 | grep -E "^tps"
rm -f "$INS"

#!/usr/bin/env bash
# `just cluster`: the shop as one system of three Panal hosts on this machine.
#
# - a NATS cluster of three servers with JetStream (client ports 14222-14224), whose
#   buckets and streams keep three replicas;
# - storage in PostgreSQL: the one PANAL_STORAGE_URL names, else a server of its own
#   (initdb + pg_ctl in a temp dir, port 15432);
# - host 1 runs every component but product, hosts 2 and 3 run product; each gateway
#   serves every route (127.0.0.1:8080, :8090, :8100; admin on the next port).
#
# Logs and data go to .panal/cluster/. Ctrl-C stops everything this script started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="$root/.panal/cluster"
mkdir -p "$dir"
panal="$root/target/release/panal"
nats_server="$HOME/.local/bin/nats-server"
[ -x "$nats_server" ] || nats_server="$(command -v nats-server)"

pids=()
pg_stop=()
stop_all() {
    echo
    echo "cluster: stopping"
    # Panal hosts first (they leave the cluster cleanly), then NATS, then PostgreSQL.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ ${#pg_stop[@]} -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
}
trap stop_all EXIT
trap 'exit 0' INT TERM

wait_for() { # what, seconds, command...
    local what="$1" seconds="$2"
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "cluster: $what did not come up; see $dir" >&2
    exit 1
}

# NATS: three servers routed to each other, JetStream on (every write synced to disk
# before it is acknowledged), a monitoring port each; clients need the hosts' password.
[ -s "$dir/nats-password" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/nats-password"
nats_password="$(cat "$dir/nats-password")"
urls=()
for i in 1 2 3; do
    urls+=("nats://panal:$nats_password@127.0.0.1:1422$i")
    routes=""
    for j in 1 2 3; do
        [ "$i" = "$j" ] || routes="$routes${routes:+, }\"nats-route://127.0.0.1:1622$j\""
    done
    mkdir -p "$dir/nats$i"
    cat >"$dir/nats$i/nats.conf" <<EOF
server_name: "n$i"
listen: "127.0.0.1:1422$i"
http: "127.0.0.1:1822$i"
max_payload: 8MB
jetstream { store_dir: "$dir/nats$i/js", sync_interval: always }
authorization { users: [ { user: "panal", password: "$nats_password" } ] }
cluster { name: "panal", listen: "127.0.0.1:1622$i", routes: [$routes] }
EOF
    "$nats_server" -c "$dir/nats$i/nats.conf" >"$dir/nats$i/log" 2>&1 &
    pids=("$!" "${pids[@]}")
done
nats_urls="$(IFS=,; echo "${urls[*]}")"
jetstream_ready() { curl -sf http://127.0.0.1:18221/jsz | grep -q '"leader"'; }
wait_for "the NATS cluster's JetStream" 30 jetstream_ready
echo "cluster: NATS ${nats_urls//$nats_password/***} ($("$nats_server" --version)), user panal, password in $dir/nats-password"

# PostgreSQL: the given one, else one of this script's own.
storage="${PANAL_STORAGE_URL:-}"
if [ -z "$storage" ]; then
    bin="$(pg_config --bindir 2>/dev/null || true)"
    [ -x "$bin/initdb" ] || bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    pg="$(mktemp -d)"
    as=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$pg"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$pg/data" -A trust -U postgres >"$dir/postgres.log" 2>&1
    "${as[@]}" "$bin/pg_ctl" -D "$pg/data" -o "-p 15432 -h 127.0.0.1 -k $pg" -l "$pg/log" -w start \
        >>"$dir/postgres.log" 2>&1
    pg_stop=("${as[@]}" "$bin/pg_ctl" -D "$pg/data" -m fast stop)
    storage="postgres://postgres@127.0.0.1:15432/postgres"
fi
echo "cluster: storage $storage"

# One cluster key for every host (they seal their calls and deploys with it).
[ -s "$dir/cluster-key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cluster-key"
export PANAL_CLUSTER_KEY="${PANAL_CLUSTER_KEY:-$(cat "$dir/cluster-key")}"

# One JWT secret for every gateway, kept across runs.
[ -s "$dir/jwt-secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/jwt-secret"
export PANAL_JWT_SECRET="${PANAL_JWT_SECRET:-$(cat "$dir/jwt-secret")}"

everything_but_product="$(sed -n 's/^\[components\.\([a-z0-9-]*\)\]$/\1/p' panal.toml | grep -vx product | paste -sd, -)"
start_host() { # number, port, components
    local n="$1" port="$2" components="$3"
    "$panal" run --manifest panal.toml --data-dir "$dir/host$n" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" \
        --cluster "$nats_urls" --replicas 3 --nats "$nats_urls" --storage-url "$storage" \
        --components "$components" >"$dir/host$n.out" 2>"$dir/host$n.log" &
    pids=("$!" "${pids[@]}")
    wait_for "host $n" 120 grep -q "panal listening" "$dir/host$n.out"
    echo "cluster: host $n: gateway http://127.0.0.1:$port (admin :$((port + 1))) runs $components"
}
start_host 1 8080 "$everything_but_product"
start_host 2 8090 product
start_host 3 8100 product
echo "cluster: ready. Try: curl http://127.0.0.1:8090/products ; ./target/release/panal status"
echo "cluster: logs in $dir; Ctrl-C stops it all"
wait

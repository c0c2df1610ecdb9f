# Sourced by the bench scripts that run several local agents (after bench-common.sh):
# certificates and configs for node-1..N on 127.0.0.1..N in a temp dir, starting and
# stopping them, and reading their control sockets.
#
#   nodes_init N 'TOML lines for [cluster]'   # writes $WORK/node-$i.toml, i = 1..N
#   start_agent I; stop_agent I               # PIDS[I] holds each running agent
#   ctl I ARGS...                             # `chorus ctl --json` on node I
#   ctl I status | field "d['result']['...']" # a value of the JSON answer (0 if absent)
#   wait_formed N                             # until node-1 sees N members alive
#   wait_writable CLIENT_FLAGS...             # until a submit through them is taken
WORK="$(mktemp -d -t chorus-nodes.XXXXXX)"
PIDS=(0)
stop_agent() {
  if [ "${PIDS[$1]:-0}" != 0 ] && kill -0 "${PIDS[$1]}" 2>/dev/null; then
    kill -TERM "${PIDS[$1]}" 2>/dev/null || true # an agent this script started
    wait "${PIDS[$1]}" 2>/dev/null || true
  fi
  PIDS[$1]=0
}
cleanup_nodes() {
  for i in "${!PIDS[@]}"; do stop_agent "$i"; done
  rm -rf "$WORK"
}
trap cleanup_nodes EXIT

nodes_init() { # nodes_init COUNT CLUSTER_LINES
  local count="$1" extra="$2" i
  "$BIN" certs init --dir "$WORK/certs" >/dev/null
  for i in $(seq 1 "$count"); do
    "$BIN" certs node "node-$i" --ip "127.0.0.$i" --dir "$WORK/certs" >/dev/null
    PIDS[$i]=0
    cat > "$WORK/node-$i.toml" <<TOML
node_id = "node-$i"
data_dir = "$WORK/data-$i"
listen = "127.0.0.$i:7400"
partitions = 1024
[log]
level = "${LOG_LEVEL:-warn,chorus_node::cluster=info}"
[tls]
ca_cert = "$WORK/certs/ca.pem"
cert = "$WORK/certs/node-$i.pem"
key = "$WORK/certs/node-$i.key"
[metrics]
listen = "127.0.0.$i:9400"
[cluster]
gossip_listen = "127.0.0.$i:7401"
seeds = ["127.0.0.1:7401"]
key_file = "$WORK/certs/cluster.key"
$extra
[cluster.gossip]
expected_cluster_size = $count
probe_period_ms = $PROBE_MS
probe_rtt_ms = $((PROBE_MS * 2 / 5))
TOML
  done
}

start_agent() {
  "$BIN" agent --config "$WORK/node-$1.toml" >/dev/null 2>>"$WORK/node-$1.log" &
  PIDS[$1]=$!
}

ctl() { # ctl NODE ARGS...: the JSON answer
  local node="$1"; shift
  "$BIN" ctl --json --config "$WORK/node-$node.toml" "$@" 2>/dev/null || true
}

field() { # field PYTHON-EXPR: EXPR on the JSON read from stdin as `d` (0 if it fails)
  python3 -c "
import json, sys
try:
    d = json.load(sys.stdin); print($1)
except Exception:
    print(0)"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

wait_formed() { # wait_formed COUNT: node-1 sees COUNT members alive, or exit 1
  local alive=0
  for _ in $(seq 1 300); do
    alive=$(ctl 1 members | field "sum(m['state'] == 'alive' for m in d['result']['members'])")
    [ "$alive" = "$1" ] && return 0
    sleep 0.1
  done
  echo "the cluster did not form" >&2
  exit 1
}

wait_writable() { # wait_writable CLIENT_FLAGS...: until a submit through them is taken
  # (writes are refused until every partition's leader has taken over), at most 20 s
  for _ in $(seq 1 200); do
    "$BIN" submit --user warmup "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
}

wait_in_step() { # wait_in_step NODES...: no leader among NODES has a follower behind
  local left i
  for _ in $(seq 1 600); do
    left=0
    for i in "$@"; do
      left=$((left + $(ctl "$i" handoff | field "d['result']['pairs_left']")))
    done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
}

load_items() { # load_items SECONDS OUTNAME: 16-item batches of 4 KB items through node-1
  "$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
    --data-dir "$WORK/data-1" --duration "$1" --warmup 1s --concurrency 16 \
    --connections 2 --batch 16 --text-bytes 4000 --users 20000 \
    --json "$OUT/$2.json" >"$OUT/$2.txt" 2>"$OUT/$2.err"
}

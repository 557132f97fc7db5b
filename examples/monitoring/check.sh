#!/usr/bin/env bash
# Check the monitoring examples against a real Prometheus: the scrape config is valid
# (promtool), Prometheus scrapes braid's /metrics with the token, and every query of the
# Grafana dashboard parses and (but for `... > 0` filters) returns series.
#
#   bash examples/monitoring/check.sh                 # against the API's fake daemon
#   bash examples/monitoring/check.sh --api 127.0.0.1:7780 --token-file /var/lib/braid/api.token
#
# Needs `prometheus` and `promtool` (Debian package `prometheus`; or set PROMETHEUS_BIN to a
# directory holding both) and python3. Listens on 127.0.0.1 only; everything it starts is
# stopped and its temporary directory removed on exit. Bounded: 60 s at most.
set -euo pipefail
cd "$(dirname "$0")/../.."

api="" token_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --api) api="$2"; shift 2 ;;
    --token-file) token_file="$2"; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
bin="${PROMETHEUS_BIN:-}"
prom="${bin:+$bin/}prometheus" promtool="${bin:+$bin/}promtool"
command -v "$prom" >/dev/null && command -v "$promtool" >/dev/null || {
  echo "prometheus/promtool not found: apt-get install prometheus, or set PROMETHEUS_BIN" >&2
  exit 1
}

work=$(mktemp -d /tmp/braid-monitoring.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

if [ -z "$api" ]; then
  api=127.0.0.1:7797
  cargo build -q -p braid-control --example fake_daemon
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  "$target_dir/debug/examples/fake_daemon" "$work" "$api" >"$work/fake.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$work/api.token" ] && break; sleep 0.1; done
  token_file="$work/api.token"
fi
[ -r "$token_file" ] || { echo "no readable token file (--token-file)" >&2; exit 1; }
cp "$token_file" "$work/braid.token" && chmod 600 "$work/braid.token"

# The example, with only the token path and the target changed.
sed -e "s#/etc/prometheus/braid.token#$work/braid.token#" \
    -e "s#\"127.0.0.1:7780\"#\"$api\"#" examples/monitoring/prometheus.yml >"$work/prometheus.yml"
"$promtool" check config "$work/prometheus.yml"

"$prom" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address=127.0.0.1:9097 >"$work/prometheus.log" 2>&1 &
pids+=($!)

python3 - "$work" <<'PY'
import json, sys, time, urllib.parse, urllib.request
work = sys.argv[1]
def query(q):
    url = "http://127.0.0.1:9097/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)
deadline = time.time() + 45
while True:
    try:
        up = query('up{job="braid"}')["data"]["result"]
        if up and up[0]["value"][1] == "1":
            break
    except Exception:
        up = None
    if time.time() > deadline:
        sys.exit(f"Prometheus did not scrape braid (up = {up}); see {work}/prometheus.log")
    time.sleep(0.5)
time.sleep(12)  # rate(...[1m]) needs two samples: scrape_interval is 5 s
d = json.load(open("examples/monitoring/grafana-dashboard.json"))
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
exprs += [v["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
          for v in d["templating"]["list"]]
bad = 0
for e in exprs:
    q = e.replace("$job", "braid").replace("$instance", ".*")
    r = query(q)
    n = len(r["data"]["result"]) if r["status"] == "success" else -1
    ok = r["status"] == "success" and (n > 0 or q.rstrip().endswith("> 0"))
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} {n:3} series  {e}")
print(f"{len(exprs) - bad} of {len(exprs)} queries answered")
sys.exit(1 if bad else 0)
PY

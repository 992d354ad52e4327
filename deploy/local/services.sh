#!/usr/bin/env bash
# Real Kafka + Redis for local runs and the test suite: no Docker, no fakes.
#
#   deploy/local/services.sh start          start both (or reuse them), print the two env lines
#   deploy/local/services.sh stop           stop both and wait until they have exited (keeps state)
#   deploy/local/services.sh status         say what runs; exit 0 when both run, 3 otherwise
#   deploy/local/services.sh env            print the env lines of running services (exit 3 if not)
#   deploy/local/services.sh clean          stop, then delete the work dir (next start is fresh)
#   deploy/local/services.sh logs [N]       last N (default 100) lines of the broker log
#   deploy/local/services.sh kafka-kill     SIGKILL the broker only (fault injection; keeps its data)
#   deploy/local/services.sh kafka-stop     stop the broker only, gracefully
#   deploy/local/services.sh kafka-start    start the broker only, on the SAME port and data dir
#                                            (fails if that port is taken); waits until it answers
#   deploy/local/services.sh kafka-restart  kafka-stop, then kafka-start
#
# `start` prints exactly these two lines on stdout (all logs go to stderr) and writes them to
# <workdir>/env:
#   KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>
#   REDIS_URL=redis://127.0.0.1:<port>/0
#
# Kafka: Apache Kafka (default 4.1.1), KRaft, one node that is both broker and controller, static
# quorum (controller.quorum.voters), jars fetched once from Maven Central with deploy/local/kafka/pom.xml
# into ${XDG_CACHE_HOME:-~/.cache}/newsmtl/kafka-<version>/libs. Redis: Debian's redis-server, no
# persistence. Both listen on 127.0.0.1 on free ports.
#
# State: the ports and the cluster id live in <workdir>/state. A later `start` (or `kafka-start`)
# reuses them and the broker's data dir, so a broker that was killed comes back on the same
# bootstrap address with its topics and committed offsets: that is what the fault suite relies on.
# Only when a saved port has been taken by some other program does `start` pick new ports and
# begin with an empty broker (it says so on stderr); `kafka-start` fails instead.
#
# Environment:
#   NEWSMTL_SERVICES_DIR      work dir (default <repo>/.work/services); one set of services per dir
#   NEWSMTL_KAFKA_VERSION     Kafka version from Maven Central (default 4.1.1)
#   NEWSMTL_SERVICES_TIMEOUT  seconds to wait for each service to answer (default 180)
#   NEWSMTL_KAFKA_HEAP        broker -Xmx (default 512m)
#   PYTHON                    python3 used for the stdlib helper (default python3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${NEWSMTL_SERVICES_DIR:-$REPO/.work/services}
KAFKA_VERSION=${NEWSMTL_KAFKA_VERSION:-4.1.1}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/newsmtl/kafka-$KAFKA_VERSION
LIBS=$CACHE/libs
TIMEOUT=${NEWSMTL_SERVICES_TIMEOUT:-180}
HEAP=${NEWSMTL_KAFKA_HEAP:-512m}
PY=${PYTHON:-python3}
HELPER=$HERE/svc_helper.py

KDIR=$WORK/kafka
RDIR=$WORK/redis
STATE=$WORK/state
ENVFILE=$WORK/env
BROKER_LOG=$KDIR/broker.log

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
helper() { "$PY" "$HELPER" "$@"; }

# ---------------------------------------------------------------- processes

# pid_of PIDFILE PATTERN: print the pid if it is alive and its command line contains PATTERN
# (guards against a recycled pid).
pid_of() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  # A zombie (killed but not yet reaped by its parent) no longer serves anything.
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  printf '%s\n' "$pid"
}
kafka_pid() { pid_of "$KDIR/kafka.pid" "kafka.Kafka"; }
redis_pid() { pid_of "$RDIR/redis.pid" "redis-server"; }

# wait_gone PID SECONDS: poll until the process has exited; 1 on timeout.
wait_gone() {
  local pid=$1 deadline
  deadline=$(( $(date +%s) + $2 ))
  while [[ -e /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
    (( $(date +%s) < deadline )) || return 1
    sleep 0.1
  done
}

# stop_pid NAME PID GRACE: SIGTERM, wait GRACE seconds, then SIGKILL and wait.
stop_pid() {
  local name=$1 pid=$2 grace=$3
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    log "$name did not exit within ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 30 || die "$name (pid $pid) survived SIGKILL"
  fi
}

broker_log_tail() {
  local n=${1:-80}
  if [[ -f $BROKER_LOG ]]; then
    log "---- last $n lines of $BROKER_LOG ----"
    tail -n "$n" "$BROKER_LOG" >&2
    log "---- end of broker log ----"
  fi
}

# ---------------------------------------------------------------- prerequisites

ensure_python() {
  command -v "$PY" >/dev/null || die "$PY not found (needed for the port and readiness helper)"
}

ensure_java() {
  command -v java >/dev/null || die "java not found: install a JDK 17+ (Debian: apt-get install -y openjdk-17-jre-headless)"
}

# Fetch the broker jars from Maven Central once; later runs use the cache and never call Maven.
ensure_jars() {
  [[ -f $LIBS/.complete ]] && return 0
  command -v mvn >/dev/null || die "mvn not found: it fetches the Kafka jars (Debian: apt-get install -y maven)"
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"
  flock 8
  if [[ ! -f $LIBS/.complete ]]; then
    local t0 tmp
    t0=$(now)
    tmp=$CACHE/libs.tmp.$$
    rm -rf "$tmp"
    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    if ! mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$HERE/kafka/pom.xml" \
        dependency:copy-dependencies -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >&2; then
      rm -rf "$tmp"
      die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION; no broker can be started"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "Maven ran but no kafka_2.13 jar was copied into $tmp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    touch "$LIBS/.complete"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $(elapsed "$t0")s"
  fi
  flock -u 8
}

ensure_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    return 0
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing redis-server with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2
  else
    die "redis-server/redis-cli not found: install them (Debian: sudo apt-get install -y redis-server)"
  fi
}

# ---------------------------------------------------------------- state

KAFKA_PORT="" CONTROLLER_PORT="" REDIS_PORT="" CLUSTER_ID=""

load_state() {
  if [[ -f $STATE ]]; then
    # shellcheck disable=SC1090
    source "$STATE"
  fi
}

save_state() {
  mkdir -p "$WORK"
  cat >"$STATE.tmp" <<EOF
KAFKA_PORT=$KAFKA_PORT
CONTROLLER_PORT=$CONTROLLER_PORT
REDIS_PORT=$REDIS_PORT
CLUSTER_ID=$CLUSTER_ID
KAFKA_VERSION_AT_FORMAT=$KAFKA_VERSION
EOF
  mv "$STATE.tmp" "$STATE"
}

env_lines() {
  printf 'KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:%s\n' "$KAFKA_PORT"
  printf 'REDIS_URL=redis://127.0.0.1:%s/0\n' "$REDIS_PORT"
}

port_free() { helper port-free "$1"; }

# ---------------------------------------------------------------- kafka

write_server_properties() {
  mkdir -p "$KDIR/data" "$KDIR/logs"
  cat >"$KDIR/server.properties" <<EOF
# Written by deploy/local/services.sh; regenerated on every start from $STATE.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KDIR/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a SIGKILL the controller keeps the dead broker's registration until this timeout ends and
# refuses the restarted one (DUPLICATE_BROKER_REGISTRATION): 6 s instead of 9 s shortens restarts.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
auto.create.topics.enable=true
delete.topic.enable=true
# Large enough for the oversize-message tests to reach the service's own size check.
message.max.bytes=33554432
replica.fetch.max.bytes=33554432
socket.request.max.bytes=104857600
log.retention.hours=24
log.segment.bytes=104857600
EOF
}

java_opts() {
  printf '%s\n' "-Xms128m" "-Xmx$HEAP" "-XX:+UseG1GC" "-XX:+ExitOnOutOfMemoryError" \
    "-Djava.awt.headless=true" "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.xml" \
    "-Dkafka.logs.dir=$KDIR/logs"
}

format_storage() {
  if [[ -f $KDIR/data/meta.properties ]]; then
    return 0
  fi
  log "formatting KRaft storage (cluster id $CLUSTER_ID)"
  local opts
  mapfile -t opts < <(java_opts)
  java "${opts[@]/-Xmx$HEAP/-Xmx256m}" -cp "$LIBS/*" kafka.tools.StorageTool format \
    -t "$CLUSTER_ID" -c "$KDIR/server.properties" >>"$BROKER_LOG" 2>&1 \
    || { broker_log_tail 40; die "kafka storage format failed"; }
}

launch_kafka() {
  local opts
  mapfile -t opts < <(java_opts)
  mkdir -p "$KDIR"
  printf '\n==== %s: starting broker on 127.0.0.1:%s ====\n' "$(date -Is)" "$KAFKA_PORT" >>"$BROKER_LOG"
  # setsid: the broker outlives this script and ignores the terminal's Ctrl-C; only `stop` ends it.
  # 8>&- 9>&-: the broker must not inherit (and so hold forever) the work-dir and cache locks.
  # The inner shell writes its own pid and then becomes java (exec), so the pid file is the broker's.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KDIR/kafka.pid" \
    java "${opts[@]}" -cp "$LIBS/*" kafka.Kafka "$KDIR/server.properties" \
    >>"$BROKER_LOG" 2>&1 </dev/null 8>&- 9>&- &
  local deadline=$(( $(date +%s) + 10 ))
  until [[ -s $KDIR/kafka.pid ]]; do
    (( $(date +%s) < deadline )) || die "the broker process did not start"
    sleep 0.05
  done
}

wait_kafka() {
  local t0=$1 deadline why
  deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    if ! kafka_pid >/dev/null; then
      broker_log_tail 80
      die "the Kafka broker exited during startup"
    fi
    if why=$(helper kafka-ready "127.0.0.1:$KAFKA_PORT" 2>&1); then
      log "kafka ready on 127.0.0.1:$KAFKA_PORT after $(elapsed "$t0")s"
      return 0
    fi
    if (( $(date +%s) >= deadline )); then
      broker_log_tail 80
      die "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${TIMEOUT}s (last probe: $why)"
    fi
    sleep 0.2
  done
}

# start_kafka STRICT: start the broker from the saved state. STRICT=1 refuses to move to new ports.
start_kafka() {
  local strict=$1 t0
  t0=$(now)
  ensure_java
  ensure_jars
  if [[ -n $KAFKA_PORT && -n $CONTROLLER_PORT && -n $CLUSTER_ID ]] \
      && ! { port_free "$KAFKA_PORT" && port_free "$CONTROLLER_PORT"; }; then
    if (( strict )); then
      die "port $KAFKA_PORT or $CONTROLLER_PORT of the stopped broker is taken by another program"
    fi
    log "saved Kafka ports $KAFKA_PORT/$CONTROLLER_PORT are taken; starting an empty broker on new ports"
    KAFKA_PORT=""
  fi
  if [[ -z $KAFKA_PORT || -z $CONTROLLER_PORT || -z $CLUSTER_ID ]]; then
    (( strict )) && die "no saved broker state in $STATE; use 'start' first"
    local ports
    mapfile -t ports < <(helper free-ports 2)
    KAFKA_PORT=${ports[0]}
    CONTROLLER_PORT=${ports[1]}
    CLUSTER_ID=$(helper cluster-id)
    rm -rf "$KDIR"
    mkdir -p "$KDIR"
    : >"$BROKER_LOG"
  else
    log "reusing broker data dir $KDIR/data and port $KAFKA_PORT"
  fi
  save_state
  write_server_properties
  format_storage
  rm -f "$KDIR/kafka.pid"
  launch_kafka
  wait_kafka "$t0"
}

stop_kafka() {
  local pid
  if pid=$(kafka_pid); then
    # A single-node controlled shutdown takes a few seconds; give it up to a minute.
    stop_pid kafka "$pid" 60
  fi
  rm -f "$KDIR/kafka.pid"
}

kill_kafka() {
  local pid
  pid=$(kafka_pid) || die "the broker is not running"
  log "SIGKILL kafka (pid $pid)"
  kill -KILL "$pid"
  wait_gone "$pid" 30 || die "kafka (pid $pid) survived SIGKILL"
  rm -f "$KDIR/kafka.pid"
}

# ---------------------------------------------------------------- redis

start_redis() {
  local t0 deadline
  t0=$(now)
  ensure_redis
  if [[ -z $REDIS_PORT ]] || ! port_free "$REDIS_PORT"; then
    REDIS_PORT=$(helper free-ports 1)
  fi
  save_state
  mkdir -p "$RDIR"
  rm -f "$RDIR/redis.pid"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log" --dir "$RDIR" \
    --save '' --appendonly no >&2 8>&- 9>&- || die "redis-server failed to start; see $RDIR/redis.log"
  deadline=$(( $(date +%s) + TIMEOUT ))
  until [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && redis_pid >/dev/null; do
    if (( $(date +%s) >= deadline )); then
      tail -n 40 "$RDIR/redis.log" >&2 || true
      die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${TIMEOUT}s"
    fi
    sleep 0.1
  done
  log "redis ready on 127.0.0.1:$REDIS_PORT after $(elapsed "$t0")s"
}

stop_redis() {
  local pid
  if pid=$(redis_pid); then
    stop_pid redis "$pid" 30
  fi
  rm -f "$RDIR/redis.pid"
}

# ---------------------------------------------------------------- commands

lock_workdir() {
  mkdir -p "$WORK"
  exec 9>"$WORK/.lock"
  flock 9
}

cmd_start() {
  ensure_python
  lock_workdir
  load_state
  local t0
  t0=$(now)
  kafka_pid >/dev/null || start_kafka 0
  redis_pid >/dev/null || start_redis
  env_lines >"$ENVFILE.tmp"
  mv "$ENVFILE.tmp" "$ENVFILE"
  log "services up in $(elapsed "$t0")s (work dir $WORK)"
  env_lines
}

cmd_stop() {
  lock_workdir
  load_state
  stop_kafka
  stop_redis
  rm -f "$ENVFILE"
  log "stopped"
}

cmd_status() {
  load_state
  local pid rc=0
  if pid=$(kafka_pid); then
    log "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
  else
    log "kafka: stopped"
    rc=3
  fi
  if pid=$(redis_pid); then
    log "redis: running (pid $pid) on 127.0.0.1:$REDIS_PORT"
  else
    log "redis: stopped"
    rc=3
  fi
  return "$rc"
}

cmd_env() {
  load_state
  kafka_pid >/dev/null && redis_pid >/dev/null || { log "services are not running"; return 3; }
  env_lines
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}

main() {
  local cmd=${1:-}
  case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    clean)
      cmd_stop
      rm -rf "$WORK"
      log "removed $WORK"
      ;;
    logs)
      [[ -f $BROKER_LOG ]] || die "no broker log at $BROKER_LOG"
      tail -n "${2:-100}" "$BROKER_LOG"
      ;;
    kafka-kill)
      lock_workdir
      load_state
      kill_kafka
      ;;
    kafka-stop)
      lock_workdir
      load_state
      stop_kafka
      ;;
    kafka-start)
      ensure_python
      lock_workdir
      load_state
      if kafka_pid >/dev/null; then
        log "kafka already running on 127.0.0.1:$KAFKA_PORT"
      else
        start_kafka 1
      fi
      ;;
    kafka-restart)
      ensure_python
      lock_workdir
      load_state
      stop_kafka
      start_kafka 1
      ;;
    -h | --help | help) usage ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"

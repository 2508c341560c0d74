#!/usr/bin/env bash
# Replays the README's target walkthroughs and prints them as transcripts:
# `s3-event relay` with one target configured from
# examples/walkthrough/<target>.json, a MinIO webhook POST, and the event read
# back through the server's own client (redis-cli, psql, the search API) or
# `s3-event subscribe`. Needs the servers of scripts/services.sh and the
# binary: `cargo build` (it lands in ${CARGO_TARGET_DIR:-target}/debug).
# Usage: scripts/walkthroughs.sh [redis|postgresql|elasticsearch|amqp|nats|kafka|sqs|sqs-source]...
# Exits 1 when a walkthrough did not show the event arriving (and, for the
# databases, leaving again on removal); scripts/test.sh runs it that way.
set -u
cd "$(dirname "$0")/.."
W=examples/walkthrough
B=${CARGO_TARGET_DIR:-target}/debug
S3E=$B/s3-event
PY=${S3E_VENV:-${S3E_SERVICES_DIR:-/tmp/s3-event-services}/venv}/bin/python
show() { echo "\$ $*"; eval "$@"; }
start_relay() { # target
  echo "\$ s3-event relay --config $W/$1.json &"
  $S3E relay --config "$W/$1.json" > /tmp/relay.out 2> /tmp/relay.err & RELAY=$!
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8090/health && break; sleep 0.2; done
  cat /tmp/relay.out
  # Another process on 8090 would answer in its place: say so.
  if ! kill -0 "$RELAY" 2> /dev/null; then
    echo "s3-event relay exited at start:"
    cat /tmp/relay.err
  fi
}
stop_relay() { kill -TERM "$RELAY" 2> /dev/null; wait "$RELAY"; }
post() { show "curl -s -X POST -d @$W/$1 http://127.0.0.1:8090/"; sleep 1; }

walk() {
  case $1 in
  redis)
    redis-cli del bucketevents > /dev/null
    start_relay redis
    post created.json
    show "redis-cli hgetall bucketevents"
    post removed.json
    show "redis-cli hlen bucketevents"
    stop_relay ;;
  postgresql)
    psql -q -h 127.0.0.1 -U postgres test -c 'drop table if exists bucketevents' > /dev/null 2>&1
    start_relay postgresql
    post created.json
    show "psql -h 127.0.0.1 -U postgres test -c \"select key, value->'Records'->0->>'eventName' as event, value->'Records'->0->'s3'->'object'->>'size' as size from bucketevents\""
    post removed.json
    show "psql -h 127.0.0.1 -U postgres test -c 'select count(*) from bucketevents'"
    stop_relay ;;
  elasticsearch)
    curl -s -X DELETE http://127.0.0.1:19200/bucketevents > /dev/null
    start_relay elasticsearch
    post created.json
    show "curl -s 'http://127.0.0.1:19200/bucketevents/_search?pretty'"
    post removed.json
    show "curl -s 'http://127.0.0.1:19200/bucketevents/_count'; echo"
    stop_relay ;;
  sqs)
    echo "\$ python $W/sqs-queue.py create bucketevents"
    "$PY" "$W/sqs-queue.py" create bucketevents
    start_relay sqs
    post created.json
    echo "\$ python $W/sqs-queue.py receive bucketevents"
    "$PY" "$W/sqs-queue.py" receive bucketevents
    stop_relay ;;
  sqs-source)
    redis-cli del photoevents > /dev/null
    echo "\$ python $W/s3-bucket.py notify photos photos-events"
    "$PY" "$W/s3-bucket.py" notify photos photos-events
    start_relay sqs-source
    echo "\$ python $W/s3-bucket.py put photos 'red flower.jpg'"
    "$PY" "$W/s3-bucket.py" put photos 'red flower.jpg'; sleep 2
    show "redis-cli hgetall photoevents | cut -c1-120"
    echo "\$ python $W/s3-bucket.py delete photos 'red flower.jpg'"
    "$PY" "$W/s3-bucket.py" delete photos 'red flower.jpg'; sleep 2
    show "redis-cli hlen photoevents"
    show "curl -s http://127.0.0.1:8090/metrics | grep -E '^s3_event_sqs_(messages|deleted)_total'"
    stop_relay ;;
  amqp|nats|kafka)
    case $1 in
      amqp) sub="amqp amqp://guest:guest@127.0.0.1:5672 bucketevents" ;;
      nats) sub="nats nats://127.0.0.1:4222 bucketevents" ;;
      kafka) sub="kafka 127.0.0.1:19092 bucketevents" ;;
    esac
    echo "\$ s3-event subscribe $sub --count 1 &"
    $S3E subscribe $sub --count 1 > /tmp/sub.out 2> /tmp/sub.err & SUB=$!
    sleep 1.5
    cat /tmp/sub.err
    start_relay "$1"
    post created.json
    wait "$SUB"
    cat /tmp/sub.out
    stop_relay ;;
  *) echo "unknown walkthrough $1" >&2; return 2 ;;
  esac
}

# What each walkthrough's output must contain.
expect() {
  case $1 in
    redis) echo 'images/myphoto.jpg' ;;
    postgresql) echo 'images/myphoto.jpg | s3:ObjectCreated:Put | 200436' ;;
    elasticsearch) echo '"_id" : "images/myphoto.jpg"' ;;
    sqs) echo 'attributes: {"EventName": "s3:ObjectCreated:Put", "Key": "images/myphoto.jpg"}' ;;
    sqs-source) echo 'photos/red flower.jpg' ;;
    *) echo '{"EventName":"s3:ObjectCreated:Put","Key":"images/myphoto.jpg","Records":[' ;;
  esac
}
removed() {
  case $1 in
    redis) echo '$ redis-cli hlen bucketevents
0' ;;
    postgresql) echo '     0' ;;
    elasticsearch) echo '"count":0' ;;
    sqs-source) echo '$ redis-cli hlen photoevents
0' ;;
    *) echo '' ;;
  esac
}

status=0
for t in ${@:-redis postgresql elasticsearch amqp nats kafka sqs sqs-source}; do
  out=$(walk "$t" 2>&1)
  printf '%s\n\n' "$out"
  if ! grep -qF "$(expect "$t")" <<<"$out" || ! grep -qF -- "$(removed "$t")" <<<"$out"; then
    echo "walkthrough $t: the event did not arrive (or was not removed) as expected" >&2
    status=1
  fi
done
exit $status

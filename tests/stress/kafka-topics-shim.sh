#!/usr/bin/env bash
# Stands in for Kafka's bin/kafka-topics.sh in librdkafka's test suite (librdkafka_suite.sh
# points KAFKA_PATH at a directory whose bin/kafka-topics.sh is this): --create and --delete,
# translated to `sluice topic`. SLUICE is the binary to call.
set -euo pipefail
bootstrap= topic= partitions=1 action= configs=()
while (($#)); do
    case $1 in
        --bootstrap-server) bootstrap=$2; shift 2 ;;
        --topic) topic=${2//\"/}; shift 2 ;;
        --partitions) partitions=$2; shift 2 ;;
        --replication-factor) shift 2 ;;
        --config) configs+=(--config "$2"); shift 2 ;;
        --create) action=create; shift ;;
        --delete) action=delete; shift ;;
        *) echo "kafka-topics shim: unsupported argument $1" >&2; exit 1 ;;
    esac
done
case $action in
    create) exec "$SLUICE" topic create "$topic" --partitions "$partitions" "${configs[@]}" --bootstrap "$bootstrap" ;;
    delete) exec "$SLUICE" topic delete "$topic" --bootstrap "$bootstrap" ;;
    *) echo "kafka-topics shim: only --create and --delete" >&2; exit 1 ;;
esac

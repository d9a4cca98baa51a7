#!/usr/bin/env bash
# Stands in for Kafka's bin/kafka-acls.sh in librdkafka's test suite (0109, 0115 and 0119 grant
# and deny topics): --add or --remove (--force) with --allow-principal or --deny-principal,
# --operation, --allow-host or --deny-host and --topic or --group, translated to `sluice acl
# add` / `sluice acl remove`. SLUICE is the binary to call. The broker needs ACLs on; see
# librdkafka_suite.sh.
set -euo pipefail
bootstrap= principal= host='*' deny=() ops=() resource=() action=
while (($#)); do
    case $1 in
        --bootstrap-server) bootstrap=$2; shift 2 ;;
        --allow-principal) principal=$2; shift 2 ;;
        --deny-principal) principal=$2; deny=(--deny); shift 2 ;;
        --allow-host | --deny-host) host=$2; shift 2 ;;
        --operation) ops+=("$2"); shift 2 ;;
        --topic) resource=(--topic "${2//\'/}"); shift 2 ;;
        --group) resource=(--group "${2//\'/}"); shift 2 ;;
        --add) action=add; shift ;;
        --remove) action=remove; shift ;;
        --force) shift ;;
        *) echo "kafka-acls shim: unsupported argument $1" >&2; exit 1 ;;
    esac
done
[[ -n $action && -n $principal && ${#resource[@]} -gt 0 ]] ||
    { echo "kafka-acls shim: only --add or --remove with a principal and a topic or group" >&2; exit 1; }
for op in "${ops[@]:-All}"; do
    "$SLUICE" acl "$action" --principal "$principal" --host "$host" --operation "$op" "${deny[@]}" \
        "${resource[@]}" --bootstrap "$bootstrap"
done

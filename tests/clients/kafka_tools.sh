#!/usr/bin/env bash
# Apache Kafka 4.4's own command-line tools (the Java classes behind kafka-topics.sh,
# kafka-console-producer/consumer.sh, kafka-consumer-groups.sh, kafka-configs.sh,
# kafka-get-offsets.sh, kafka-delete-records.sh, kafka-verifiable-producer/consumer.sh,
# kafka-producer/consumer-perf-test.sh, kafka-cluster.sh, kafka-broker-api-versions.sh,
# kafka-log-dirs.sh, kafka-leader-election.sh) against a running broker, each output checked.
#
#   mvn -q -B -o -f tests/clients/java/pom.xml package     # once: classes + target/dependency
#   bash tests/clients/kafka_tools.sh 127.0.0.1:9092        # (or --bootstrap HOST:PORT)
#
# Prints `OK <tool> <scenario>` per passed check, `FAIL <tool> <scenario>: why` plus the tool's
# output for each failed one, and `GAP <tool> <scenario>: error` where the broker cleanly refuses
# a feature it does not implement (none on sluice now; the script runs against other brokers too):
# a GAP is not a failure unless STRICT=1. Exits 1 if any check failed. Topic and group names
# carry a per-run prefix, so it can run again on the same broker. Needs a broker that
# auto-creates topics (the perf test's topic) and java 17+. Takes ~2-3 minutes.
set -u

name=kafka_tools.sh
bootstrap=${1:-}
[ "$bootstrap" = "--bootstrap" ] && bootstrap=${2:-}
[ -n "$bootstrap" ] || { echo "usage: $name BOOTSTRAP (HOST:PORT)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
target=$here/java/target
[ -f "$target/dependency/kafka-tools-4.4.0.jar" ] || {
  echo "FAIL $name: no $target/dependency/kafka-tools-4.4.0.jar;" \
    "run: mvn -q -B -o -f tests/clients/java/pom.xml package" >&2
  exit 2
}
command -v java >/dev/null || { echo "FAIL $name: java is not installed" >&2; exit 2; }
cp="$target/classes:$target/dependency/*"

work=$(mktemp -d)
bg_pids=()
cleanup() {
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
run="kt$$x$(date +%s)"
T=$run-main          # 3 partitions, then 4: console producer/consumer, offsets, groups, records
D=$run-doomed        # created and deleted
V=$run-verifiable    # verifiable producer/consumer
P=$run-perf          # auto-created by the producer perf test
G=$run-g             # the group the console consumer commits, then resets and deletes
GC=$run-classic      # a live classic-protocol member
GN=$run-848          # a live KIP-848 (group.protocol=consumer) member

failures=()
gaps=()
ok() { echo "OK $1 $2"; }
# fail TOOL SCENARIO WHY [FILE...]: record a failure and show the tool's output.
fail() {
  local tool=$1 scen=$2 why=$3
  shift 3
  echo "FAIL $tool $scen: $why"
  local f
  for f in "$@"; do
    [ -s "$f" ] && grep -v -e '^[[:space:]]*at ' -e 'is deprecated' "$f" | head -25 | sed 's/^/    | /'
  done
  failures+=("$tool $scen")
}
gap() { echo "GAP $1 $2: $3"; gaps+=("$1 $2"); }
# check TOOL SCENARIO WHY-IF-NOT CONDITION-COMMAND... (output files for the report go in $show)
show=()
check() {
  local tool=$1 scen=$2 why=$3
  shift 3
  if "$@"; then ok "$tool" "$scen"; else fail "$tool" "$scen" "$why" "${show[@]}"; fi
  show=()
}

# kt CLASS ARGS...: run one tool; stdout to $work/out, stderr to $work/err, exit code in $rc.
rc=0
kt() {
  local class=$1
  shift
  timeout "${kt_timeout:-120}" nice java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" "org.apache.kafka.tools.$class" \
    --bootstrap-server "$bootstrap" "$@" >"$work/out" 2>"$work/err"
  rc=$?
}
# The same, without the implicit --bootstrap-server (tools that take it elsewhere).
kt_raw() {
  local class=$1
  shift
  timeout "${kt_timeout:-120}" nice java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" "org.apache.kafka.tools.$class" \
    "$@" >"$work/out" 2>"$work/err"
  rc=$?
}
save() { cp "$work/out" "$work/$1"; cp "$work/err" "$work/$1.err"; }
has() { grep -q -E -- "$1" "${2:-$work/out}"; }
lacks() { ! grep -q -E -- "$1" "${2:-$work/out}"; }
eq() { [ "$1" = "$2" ]; }
# GetOffsetShell output ("topic:partition:offset") of topic $1 as "p o" lines, by partition.
offsets() { awk -F: -v t="$1" '$1==t {print $2, $3}' "${2:-$work/out}" | sort -n; }
# consumer-groups --describe rows of group $1, topic $2: "p current end lag", by partition.
described() { awk -v g="$1" -v t="$2" '$1==g && $2==t {print $3, $4, $5, $6}' "${3:-$work/out}" | sort -n; }
sum2() { awk '{s+=$2} END {print s+0}'; }
CG=consumer.group.ConsumerGroupCommand
CC=consumer.ConsoleConsumer
start=$(date +%s)

# ---------------------------------------------------------------- kafka-cluster (and a reachable broker)
kt_timeout=30 kt_raw ClusterTool cluster-id --bootstrap-server "$bootstrap"
if [ $rc != 0 ]; then
  echo "FAIL $name: no broker answers at $bootstrap (kafka-cluster cluster-id, rc=$rc):"
  grep -v '^[[:space:]]*at ' "$work/err" | sort -u | head -3
  exit 1
fi
show=("$work/out" "$work/err")
check kafka-cluster cluster-id "no Cluster ID" eval 'has "^Cluster ID: [^ ]+\$"'

# ---------------------------------------------------------------- kafka-topics
kt TopicCommand --create --topic "$T" --partitions 3 --replication-factor 1 \
  --config retention.ms=86400000
show=("$work/out" "$work/err")
check kafka-topics create "rc=$rc, no 'Created topic'" eval '[ $rc = 0 ] && has "Created topic $T"'
kt TopicCommand --create --topic "$D" --partitions 1
kt TopicCommand --list
show=("$work/out" "$work/err")
check kafka-topics list "both topics not listed" eval 'has "^$T\$" && has "^$D\$"'
kt TopicCommand --describe --topic "$T"
show=("$work/out" "$work/err")
check kafka-topics describe "want PartitionCount: 3, retention.ms=86400000, 3 partitions led by a broker" \
  eval 'has "PartitionCount: 3" && has "Configs: .*retention.ms=86400000" &&
    [ "$(grep -c -E "Partition: [0-9]+[[:space:]]+Leader: [0-9]+" "$work/out")" = 3 ]'
kt TopicCommand --alter --topic "$T" --partitions 4
kt TopicCommand --describe --topic "$T"
show=("$work/out" "$work/err")
check kafka-topics alter-partitions "want PartitionCount: 4 after --alter --partitions 4" \
  eval 'has "PartitionCount: 4" && [ "$(grep -c -E "Partition: [0-9]+[[:space:]]+Leader: [0-9]+" "$work/out")" = 4 ]'
kt TopicCommand --alter --topic "$T" --partitions 2
show=("$work/out" "$work/err")
check kafka-topics shrink-refused "shrinking to 2 partitions was not refused (rc=$rc)" \
  eval '[ $rc != 0 ] && has "InvalidPartitionsException" "$work/err"'
kt TopicCommand --create --topic "$T" --partitions 1
show=("$work/out" "$work/err")
check kafka-topics create-existing-refused "creating an existing topic was not refused (rc=$rc)" \
  eval '[ $rc != 0 ] && has "TopicExistsException" "$work/err"'
kt TopicCommand --delete --topic "$D"
show=("$work/out" "$work/err")
check kafka-topics delete "rc=$rc" eval '[ $rc = 0 ]'
kt TopicCommand --list
save topics-after-delete
show=("$work/out" "$work/err")
check kafka-topics list-after-delete "deleted topic still listed or the other one missing" \
  eval 'lacks "^$D\$" && has "^$T\$"'

# ---------------------------------------------------------------- console producer / consumer
# 100 keyed records k1:v1..k100:v100, spread over the 4 partitions by key.
seq 1 100 | sed 's/.*/k&:v&/' >"$work/batch1"
kt ConsoleProducer --topic "$T" --reader-property parse.key=true \
  --reader-property key.separator=: <"$work/batch1"
show=("$work/out" "$work/err")
check kafka-console-producer produce-100 "rc=$rc" eval '[ $rc = 0 ]'

# Two live members in the background for the group checks further down (classic + KIP-848):
# they join while the rest runs. They only read; their groups are their own.
for spec in "$GC classic" "$GN consumer"; do
  set -- $spec
  timeout 170 nice java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server "$bootstrap" --topic "$T" --group "$1" --timeout-ms 170000 \
    --consumer-property group.protocol="$2" --consumer-property client.id="$1-client" \
    >/dev/null 2>"$work/bg-$2.err" &
  bg_pids+=($!)
done

kt GetOffsetShell --topic "$T" --time -1
offsets "$T" >"$work/end1"
show=("$work/out" "$work/err")
check kafka-get-offsets latest-sum-100 "end offsets of 4 partitions should sum to 100" \
  eval '[ "$(wc -l <"$work/end1")" = 4 ] && [ "$(sum2 <"$work/end1")" = 100 ]'
kt GetOffsetShell --topic "$T" --time -2
show=("$work/out" "$work/err")
check kafka-get-offsets earliest-0 "want offset 0 for each of 4 partitions" \
  eval '[ "$(offsets "$T" | awk "\$2==0" | wc -l)" = 4 ]'

kt "$CC" --topic "$T" --from-beginning --max-messages 100 --group "$G" \
  --isolation-level read_committed --formatter-property print.key=true \
  --formatter-property print.timestamp=true --formatter-property print.partition=true \
  --formatter-property print.offset=true --timeout-ms 30000
save consumed1
# CreateTime:TS<TAB>Partition:P<TAB>Offset:O<TAB>KEY<TAB>VALUE
sed 's/[A-Za-z]*://g' "$work/consumed1" | awk -F'\t' 'NF==5' >"$work/rec1" # ts p o k v
show=("$work/consumed1" "$work/consumed1.err")
check kafka-console-consumer consume-100-read_committed "want the 100 keys once each, value matching key" \
  eval '[ "$(awk -F"\t" "{print \$4\":\"\$5}" "$work/rec1" | sort)" = "$(sort "$work/batch1")" ]'
check kafka-console-consumer offsets-dense "per partition, offsets should be 0..end-1" \
  eval '[ "$(awk -F"\t" "{n[\$2]++; if(!(\$2 in m)||\$3>m[\$2])m[\$2]=\$3} END{for(p in n)print p, n[p], m[p]+1}" "$work/rec1" | sort -n |
    awk "\$2!=\$3{print \"bad\"} {print \$1, \$2}")" = "$(cat "$work/end1")" ]'

# 10 more, then the whole topic again without a group (timestamps for the time lookups).
seq 101 110 | sed 's/.*/k&:v&/' >"$work/batch2"
kt ConsoleProducer --topic "$T" --reader-property parse.key=true \
  --reader-property key.separator=: <"$work/batch2"
kt GetOffsetShell --topic "$T" --time -1
offsets "$T" >"$work/end2"
show=("$work/out" "$work/err")
check kafka-get-offsets latest-sum-110 "end offsets should sum to 110 after 10 more" \
  eval '[ "$(sum2 <"$work/end2")" = 110 ]'
kt "$CC" --topic "$T" --from-beginning --max-messages 110 --formatter-property print.partition=true \
  --formatter-property print.timestamp=true --formatter-property print.offset=true \
  --formatter-property print.key=true --timeout-ms 30000
save consumed2
sed 's/[A-Za-z]*://g' "$work/consumed2" | awk -F'\t' 'NF==5' >"$work/rec2"
show=("$work/consumed2" "$work/consumed2.err")
check kafka-console-consumer consume-110-no-group "want 110 records" eval '[ "$(wc -l <"$work/rec2")" = 110 ]'

# --time -3 (max timestamp): the first offset holding the partition's largest timestamp.
awk -F'\t' '{ if (!($2 in m) || $1>m[$2] || ($1==m[$2] && $3<o[$2])) {m[$2]=$1; o[$2]=$3} }
  END {for (p in m) print p, o[p]}' "$work/rec2" | sort -n >"$work/want-maxts"
kt GetOffsetShell --topic "$T" --time -3
save maxts
show=("$work/maxts" "$work/maxts.err" "$work/want-maxts")
check kafka-get-offsets max-timestamp "offsets differ from the consumed records' (want-maxts shown last)" \
  eval '[ "$(offsets "$T" "$work/maxts")" = "$(cat "$work/want-maxts")" ]'
# --time TS: the first offset with a timestamp >= TS; partitions without one are not printed.
# TS = the first timestamp of the second batch, so the answer is the first batch's end offsets.
ts2=$(awk -F'\t' '$4 ~ /^k1(0[1-9]|10)$/ {print $1}' "$work/rec2" | sort -n | head -1)
awk -F'\t' -v t="${ts2:-0}" '$1>=t { if (!($2 in o) || $3<o[$2]) o[$2]=$3 } END {for (p in o) print p, o[p]}' \
  "$work/rec2" | sort -n >"$work/want-ts2"
kt GetOffsetShell --topic "$T" --time "${ts2:-0}"
save byts
show=("$work/byts" "$work/byts.err" "$work/want-ts2")
check kafka-get-offsets by-timestamp "offsets for --time $ts2 differ from the consumed records'" \
  eval '[ -n "$ts2" ] && [ -s "$work/want-ts2" ] && [ "$(offsets "$T" "$work/byts")" = "$(cat "$work/want-ts2")" ]'

# ---------------------------------------------------------------- kafka-consumer-groups
kt "$CG" --list
show=("$work/out" "$work/err")
check kafka-consumer-groups list "group $G not listed" eval 'has "^$G\$"'
kt "$CG" --describe --group "$G"
save desc0
# After consuming 100 and producing 10 more: committed = first batch's ends, lag = the new 10.
paste -d' ' "$work/end1" "$work/end2" | awk '{print $1, $2, $4, $4-$2}' >"$work/want-lag10"
show=("$work/desc0" "$work/desc0.err" "$work/want-lag10")
check kafka-consumer-groups describe-lag "want CURRENT-OFFSET=first batch's end, LAG summing to 10" \
  eval '[ "$(described "$G" "$T" "$work/desc0")" = "$(cat "$work/want-lag10")" ] &&
    [ "$(described "$G" "$T" "$work/desc0" | awk "{s+=\$4} END{print s}")" = 10 ]'
kt "$CG" --describe --group "$G" --state
show=("$work/out" "$work/err")
check kafka-consumer-groups describe-state-empty "want state Empty with 0 members" \
  eval 'has "^$G +[^ ]+ +\\([0-9]+\\) +[^ ]+ +Empty +0 *\$"'

kt "$CG" --reset-offsets --group "$G" --topic "$T" --to-earliest --dry-run
show=("$work/out" "$work/err")
check kafka-consumer-groups reset-earliest-dry-run "want NEW-OFFSET 0 for the 4 partitions" \
  eval '[ "$(awk -v g="$G" -v t="$T" "\$1==g && \$2==t && \$4==0" "$work/out" | wc -l)" = 4 ]'
kt "$CG" --describe --group "$G"
show=("$work/out" "$work/err")
check kafka-consumer-groups dry-run-changed-nothing "offsets moved after a --dry-run" \
  eval '[ "$(described "$G" "$T")" = "$(described "$G" "$T" "$work/desc0")" ]'

# --to-datetime the second batch's first timestamp: the first batch's end offsets.
ts2_iso=""
[ -n "$ts2" ] && ts2_iso=$(date -u -d "@$((ts2 / 1000))" +%Y-%m-%dT%H:%M:%S).$(printf %03d $((ts2 % 1000)))Z
awk '{print $1, $2}' "$work/end1" >"$work/want-dt"
kt "$CG" --reset-offsets --group "$G" --topic "$T" --to-datetime "$ts2_iso" --dry-run
show=("$work/out" "$work/err" "$work/want-dt")
check kafka-consumer-groups reset-datetime-dry-run "NEW-OFFSETs for $ts2_iso are not the first batch's ends" \
  eval '[ "$(awk -v g="$G" -v t="$T" "\$1==g && \$2==t {print \$3, \$4}" "$work/out" | sort -n)" = "$(cat "$work/want-dt")" ]'
kt "$CG" --reset-offsets --group "$G" --topic "$T" --to-earliest --execute
kt "$CG" --describe --group "$G"
show=("$work/out" "$work/err")
check kafka-consumer-groups reset-earliest-execute "want CURRENT-OFFSET 0 and LAG summing to 110" \
  eval '[ "$(described "$G" "$T" | awk "\$2==0" | wc -l)" = 4 ] &&
    [ "$(described "$G" "$T" | awk "{s+=\$4} END{print s}")" = 110 ]'
kt "$CG" --reset-offsets --group "$G" --topic "$T" --to-datetime "$ts2_iso" --execute
kt "$CG" --describe --group "$G"
show=("$work/out" "$work/err" "$work/want-dt")
check kafka-consumer-groups reset-datetime-execute "CURRENT-OFFSETs are not the first batch's ends" \
  eval '[ "$(described "$G" "$T" | awk "{print \$1, \$2}")" = "$(cat "$work/want-dt")" ]'
kt "$CG" --reset-offsets --group "$G" --topic "$T" --shift-by -3 --execute
kt "$CG" --reset-offsets --group "$G" --topic "$T:0" --to-offset 1 --execute
kt "$CG" --describe --group "$G"
# shift-by -3 from the first batch's ends (not below 0), then partition 0 to offset 1.
paste -d' ' "$work/want-dt" "$work/end2" |
  awk '{o=$2-3; if (o<0) o=0; if ($1==0) o=($4<1?$4:1); print $1, o}' >"$work/want-shift"
show=("$work/out" "$work/err" "$work/want-shift")
check kafka-consumer-groups reset-shift-by-and-to-offset "want partition 0 at 1, the others 3 below the first batch's ends" \
  eval '[ "$(described "$G" "$T" | awk "{print \$1, \$2}")" = "$(cat "$work/want-shift")" ]'
kt "$CG" --delete-offsets --group "$G" --topic "$T:3"
show=("$work/out" "$work/err")
check kafka-consumer-groups delete-offsets "no Successful for partition 3" eval 'has "^$T +3 +Successful"'
kt "$CG" --describe --group "$G"
show=("$work/out" "$work/err")
check kafka-consumer-groups delete-offsets-describe "want partitions 0-2 left, 3 gone" \
  eval '[ "$(described "$G" "$T" | awk "{print \$1}" | tr "\n" " ")" = "0 1 2 " ]'

# The live members (started above): members, state, type; a non-empty group is not deletable.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  kt "$CG" --describe --group "$GC" --group "$GN" --members --verbose
  grep -q -E "^$GC .* $GC-client .*$T:0,1,2,3" "$work/out" &&
    grep -q -E "^$GN .* $GN-client .*$T:0,1,2,3" "$work/out" && break
  sleep 2
done
save members
show=("$work/members" "$work/members.err" "$work/bg-classic.err" "$work/bg-consumer.err")
check kafka-consumer-groups describe-members-verbose-classic "want one member of $GC owning $T:0,1,2,3" \
  eval 'grep -q -E "^$GC +[^ ]+ +[^ ]+ +$GC-client +4 +- +$T:0,1,2,3" "$work/members"'
show=("$work/members" "$work/members.err" "$work/bg-consumer.err")
check kafka-consumer-groups describe-members-verbose-848 "want one member of $GN owning $T:0,1,2,3 as current and target" \
  eval 'grep -q -E "^$GN +[^ ]+ +[^ ]+ +$GN-client +4 +[0-9]+ +$T:0,1,2,3 +[0-9]+ +$T:0,1,2,3" "$work/members"'
show=("$work/members")
check kafka-consumer-groups describe-members-848-epochs "a KIP-848 member's CURRENT-EPOCH/TARGET-EPOCH should be >= 1 (ConsumerGroupDescribe member epochs)" \
  eval 'grep -q -E "^$GN +[^ ]+ +[^ ]+ +$GN-client +4 +[1-9][0-9]* +$T:0,1,2,3 +[1-9][0-9]* " "$work/members"'
kt "$CG" --describe --group "$GC" --group "$GN" --state --verbose
save state
show=("$work/state" "$work/state.err")
check kafka-consumer-groups describe-state-classic "want $GC Stable, assignor range, 1 member" \
  eval 'has "^$GC +[^ ]+ +\\([0-9]+\\) +range +Stable +(- +- +)?1 *\$" "$work/state"'
show=("$work/state" "$work/state.err")
check kafka-consumer-groups describe-state-848 "want $GN Stable, assignor uniform, 1 member" \
  eval 'has "^$GN +[^ ]+ +\\([0-9]+\\) +uniform +Stable +[0-9]+ +[0-9]+ +1 *\$" "$work/state"'
show=("$work/state" "$work/state.err")
check kafka-consumer-groups describe-state-848-epochs "GROUP-EPOCH and TARGET-ASSIGNMENT-EPOCH should be >= 1 (ConsumerGroupDescribe group_epoch/assignment_epoch)" \
  eval 'has "^$GN +[^ ]+ +\\([0-9]+\\) +uniform +Stable +[1-9][0-9]* +[1-9][0-9]* +1 *\$" "$work/state"'
kt "$CG" --describe --group "$GN"
show=("$work/out" "$work/err")
check kafka-consumer-groups describe-live-lag "want $GN's 4 partitions with LAG 0 and its member's client id" \
  eval '[ "$(awk -v g="$GN" -v t="$T" -v c="$GN-client" "\$1==g && \$2==t && \$6==0 && \$9==c" "$work/out" | wc -l)" = 4 ]'
kt "$CG" --list --type
save types
show=("$work/types" "$work/types.err")
check kafka-consumer-groups list-type "want $GC Classic and $GN Consumer (ListGroups v5 GroupType)" \
  eval 'has "^$GC +Classic *\$" "$work/types" && has "^$GN +Consumer *\$" "$work/types"'
kt "$CG" --list --type consumer
save types-consumer
show=("$work/types-consumer" "$work/types-consumer.err")
check kafka-consumer-groups list-type-filter "--type consumer should list $GN and not $GC (ListGroups types_filter)" \
  eval 'has "^$GN " "$work/types-consumer" && lacks "^$GC " "$work/types-consumer"'
kt "$CG" --delete --group "$GC"
show=("$work/out" "$work/err")
check kafka-consumer-groups delete-non-empty-refused "deleting a group with a live member was not refused" \
  eval 'grep -q -i -E "(non|not).?empty" "$work/out" "$work/err"'
for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
bg_pids=()
kt "$CG" --delete --group "$G"
show=("$work/out" "$work/err")
check kafka-consumer-groups delete "no success message" eval 'has "Deletion of requested consumer groups .*was successful"'
kt "$CG" --list
show=("$work/out" "$work/err")
check kafka-consumer-groups list-after-delete "deleted group $G still listed" eval '[ $rc = 0 ] && lacks "^$G\$"'

# ---------------------------------------------------------------- kafka-delete-records
e0=$(awk '$1==0 {print $2}' "$work/end2")
e1=$(awk '$1==1 {print $2}' "$work/end2")
cut0=$((e0 < 2 ? e0 : 2))
cat >"$work/delete.json" <<EOF
{"version":1,"partitions":[{"topic":"$T","partition":0,"offset":$cut0},{"topic":"$T","partition":1,"offset":-1}]}
EOF
kt DeleteRecordsCommand --offset-json-file "$work/delete.json"
show=("$work/out" "$work/err")
check kafka-delete-records delete "want low_watermark $cut0 for partition 0 and $e1 (the end, offset -1) for 1" \
  eval 'has "partition: $T-0[[:space:]]+low_watermark: $cut0\$" && has "partition: $T-1[[:space:]]+low_watermark: $e1\$"'
kt GetOffsetShell --topic "$T" --time -2
show=("$work/out" "$work/err")
check kafka-get-offsets earliest-after-delete-records "want log start $cut0, $e1, 0, 0" \
  eval '[ "$(offsets "$T" | tr "\n" " ")" = "0 $cut0 1 $e1 2 0 3 0 " ]'
kt "$CC" --topic "$T" --partition 0 --offset earliest --max-messages 1 \
  --formatter-property print.offset=true --timeout-ms 20000
show=("$work/out" "$work/err")
check kafka-console-consumer reads-from-log-start "want the first record at Offset:$cut0" \
  eval '[ $cut0 -ge $e0 ] || has "^Offset:$cut0[[:space:]]"'
echo "{\"version\":1,\"partitions\":[{\"topic\":\"$T\",\"partition\":2,\"offset\":100000}]}" >"$work/delete-far.json"
kt DeleteRecordsCommand --offset-json-file "$work/delete-far.json"
show=("$work/out" "$work/err")
check kafka-delete-records beyond-end-refused "deleting past the end was not refused with OffsetOutOfRange" \
  eval 'grep -q "OffsetOutOfRange" "$work/out" "$work/err"'

# ---------------------------------------------------------------- kafka-configs
kt ConfigCommand --alter --entity-type topics --entity-name "$T" \
  --add-config retention.ms=3600000,cleanup.policy=compact
kt ConfigCommand --describe --entity-type topics --entity-name "$T"
show=("$work/out" "$work/err")
check kafka-configs topic-alter-describe "want retention.ms=3600000 and cleanup.policy=compact" \
  eval 'has "^ +retention.ms=3600000 " && has "^ +cleanup.policy=compact "'
kt ConfigCommand --alter --entity-type topics --entity-name "$T" --delete-config cleanup.policy
kt ConfigCommand --describe --entity-type topics --entity-name "$T"
show=("$work/out" "$work/err")
check kafka-configs topic-delete-config "cleanup.policy still set, or retention.ms lost" \
  eval 'lacks "cleanup.policy=" && has "^ +retention.ms=3600000 "'
kt ConfigCommand --alter --entity-type topics --entity-name "$T" --add-config retention.ms=abc
show=("$work/out" "$work/err")
check kafka-configs topic-invalid-value-refused "retention.ms=abc was not refused" \
  eval '[ $rc != 0 ] && has "InvalidConfigurationException|InvalidRequestException" "$work/err"'
kt ConfigCommand --describe --entity-type brokers --all
show=("$work/out" "$work/err")
# log.retention.ms and log.roll.ms set nowhere are null, as Kafka 4.4 says (it goes by
# log.retention.hours and log.roll.hours).
check kafka-configs broker-describe-all "want 'All configs for broker' with a broker.id, log.retention.ms and log.roll.ms null" \
  eval 'has "^All configs for broker [0-9]+ are:" && has "^ +broker.id=[0-9]+ " && has "^ +log.retention.ms=null sensitive=false synonyms=\{\}$" && has "^ +log.roll.ms=null sensitive=false synonyms=\{\}$"'
# The node id, for the broker loggers below.
bid=$(grep -m1 -oE '^ +broker.id=[0-9]+' "$work/out" | grep -oE '[0-9]+$' || echo 1)
# Dynamic broker configs: a cluster-wide default, then this broker's own value over it, both
# seen by a topic without its own retention.bytes; removed, the topic is back at the default.
kt ConfigCommand --alter --entity-type brokers --entity-default --add-config log.retention.bytes=123456789
kt ConfigCommand --describe --entity-type brokers --entity-default
show=("$work/out" "$work/err")
check kafka-configs broker-default-alter "want log.retention.bytes=123456789 in the cluster default" \
  eval 'has "^ +log.retention.bytes=123456789 .*DYNAMIC_DEFAULT_BROKER_CONFIG"'
kt ConfigCommand --describe --entity-type topics --entity-name "$T" --all
show=("$work/out" "$work/err")
check kafka-configs broker-default-reaches-topics "the topic's retention.bytes is not the new default" \
  eval 'has "^ +retention.bytes=123456789 "'
kt ConfigCommand --alter --entity-type brokers --entity-name "$bid" --add-config log.retention.bytes=987654321
kt ConfigCommand --describe --entity-type brokers --entity-name "$bid" --all
show=("$work/out" "$work/err")
check kafka-configs broker-dynamic-alter "want this broker's log.retention.bytes=987654321 over the default" \
  eval 'has "^ +log.retention.bytes=987654321 .*DYNAMIC_BROKER_CONFIG"'
# Where each value comes from, line for line as Kafka 4.4 prints it for the same settings:
# the topic's own value, then this broker's, the cluster default, the built-in default (under
# the broker's name; none for segment.ms, whose built-in default Kafka keeps in log.roll.hours).
kt ConfigCommand --describe --entity-type topics --entity-name "$T" --all
show=("$work/out" "$work/err")
check kafka-configs synonyms "sources or synonyms differ from Kafka's" \
  eval 'has "^  retention.bytes=987654321 sensitive=false synonyms=\{DYNAMIC_BROKER_CONFIG:log.retention.bytes=987654321, DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.bytes=123456789, DEFAULT_CONFIG:log.retention.bytes=-1\}$" &&
    has "^  retention.ms=3600000 sensitive=false synonyms=\{DYNAMIC_TOPIC_CONFIG:retention.ms=3600000\}$" &&
    has "^  segment.ms=604800000 sensitive=false synonyms=\{\}$" &&
    has "^  max.message.bytes=1048588 sensitive=false synonyms=\{DEFAULT_CONFIG:message.max.bytes=1048588\}$" &&
    has "^  message.timestamp.after.max.ms=3600000 sensitive=false synonyms=\{DEFAULT_CONFIG:log.message.timestamp.after.max.ms=3600000\}$"'
# log.cleaner.threads changes while the broker runs, and is described as Kafka 4.4 does.
kt ConfigCommand --alter --entity-type brokers --entity-default --add-config log.cleaner.threads=2
kt ConfigCommand --describe --entity-type brokers --entity-name "$bid" --all
show=("$work/out" "$work/err")
check kafka-configs broker-cleaner-threads "want log.cleaner.threads=2 from the cluster default" \
  eval 'has "^  log.cleaner.threads=2 sensitive=false synonyms=\{DYNAMIC_DEFAULT_BROKER_CONFIG:log.cleaner.threads=2, DEFAULT_CONFIG:log.cleaner.threads=1\}$"'
kt ConfigCommand --alter --entity-type brokers --entity-default --delete-config log.cleaner.threads
kt ConfigCommand --alter --entity-type brokers --entity-default --add-config log.dirs=/elsewhere
show=("$work/out" "$work/err")
check kafka-configs broker-static-refused "a setting sluice cannot change while running was accepted" \
  eval '[ $rc != 0 ] && has "InvalidRequestException" "$work/err"'
kt ConfigCommand --alter --entity-type brokers --entity-name "$bid" --delete-config log.retention.bytes
kt ConfigCommand --alter --entity-type brokers --entity-default --delete-config log.retention.bytes
kt ConfigCommand --describe --entity-type topics --entity-name "$T" --all
show=("$work/out" "$work/err")
check kafka-configs broker-dynamic-delete "want retention.bytes back at -1" \
  eval 'has "^ +retention.bytes=-1 "'
kt ConfigCommand --describe --entity-type groups --entity-name "$GN" --all
if [ $rc = 0 ]; then
  show=("$work/out" "$work/err")
  check kafka-configs group-describe "want consumer.session.timeout.ms and consumer.heartbeat.interval.ms" \
    eval 'has "^ +consumer.session.timeout.ms=[0-9]+ " && has "^ +consumer.heartbeat.interval.ms=[0-9]+ "'
else
  gap kafka-configs group-describe "$(grep -m1 -o 'Caused by: .*' "$work/err")"; fi
# Group configs (Kafka 4, KIP-848): the group's own session timeout over the coordinator's;
# one outside the coordinator's bounds is refused; removed, the default is back.
kt ConfigCommand --alter --entity-type groups --entity-name "$GN" --add-config consumer.session.timeout.ms=50000
kt ConfigCommand --describe --entity-type groups --entity-name "$GN" --all
show=("$work/out" "$work/err")
check kafka-configs group-alter "want the group's consumer.session.timeout.ms=50000" \
  eval 'has "^ +consumer.session.timeout.ms=50000 "'
kt ConfigCommand --alter --entity-type groups --entity-name "$GN" --add-config consumer.session.timeout.ms=1
show=("$work/out" "$work/err")
check kafka-configs group-alter-out-of-bounds-refused "a 1 ms session timeout was accepted" \
  eval '[ $rc != 0 ] && has "InvalidConfigurationException" "$work/err"'
kt ConfigCommand --alter --entity-type groups --entity-name "$GN" --delete-config consumer.session.timeout.ms
kt ConfigCommand --describe --entity-type groups --entity-name "$GN" --all
show=("$work/out" "$work/err")
check kafka-configs group-delete "want consumer.session.timeout.ms back at the coordinator's 45000" \
  eval 'has "^ +consumer.session.timeout.ms=45000 "'
# Broker loggers: log levels changed while the broker runs. The request logger is turned on
# here and off again; clients.rs then finds its DEBUG lines in the broker's log.
kt ConfigCommand --describe --entity-type broker-loggers --entity-name "$bid"
show=("$work/out" "$work/err")
check kafka-configs broker-loggers-describe "want root=INFO and sluice.protocol.requests listed" \
  eval '[ $rc = 0 ] && has "^ +root=INFO " && has "^ +sluice.protocol.requests=INFO "'
kt ConfigCommand --alter --entity-type broker-loggers --entity-name "$bid" \
  --add-config sluice.protocol.requests=DEBUG
kt ConfigCommand --describe --entity-type broker-loggers --entity-name "$bid"
show=("$work/out" "$work/err")
check kafka-configs broker-loggers-set "want sluice.protocol.requests=DEBUG" \
  eval 'has "^ +sluice.protocol.requests=DEBUG " && has "^ +root=INFO "'
kt ConfigCommand --alter --entity-type broker-loggers --entity-name "$bid" \
  --add-config sluice.log=LOUD
show=("$work/out" "$work/err")
check kafka-configs broker-loggers-bad-level-refused "LOUD was not refused" \
  eval '[ $rc != 0 ] && has "InvalidConfigurationException" "$work/err"'
kt ConfigCommand --alter --entity-type broker-loggers --entity-name "$bid" \
  --delete-config sluice.protocol.requests
kt ConfigCommand --describe --entity-type broker-loggers --entity-name "$bid"
show=("$work/out" "$work/err")
check kafka-configs broker-loggers-delete "want sluice.protocol.requests back at root's INFO" \
  eval 'has "^ +sluice.protocol.requests=INFO "'
# Client quotas: a client id, a user + client id pair, the default client id; then one removed.
kt ConfigCommand --alter --entity-type clients --entity-name "$run-c" \
  --add-config producer_byte_rate=1048576,consumer_byte_rate=2097152
kt ConfigCommand --alter --entity-type users --entity-name "$run-u" --entity-type clients \
  --entity-name "$run-c" --add-config request_percentage=50
kt ConfigCommand --describe --entity-type clients --entity-name "$run-c"
show=("$work/out" "$work/err")
check kafka-configs quota-client "want consumer_byte_rate=2097152.0, producer_byte_rate=1048576.0" \
  eval 'has "client-id .$run-c. are consumer_byte_rate=2097152.0, producer_byte_rate=1048576.0"'
kt ConfigCommand --describe --entity-type users --entity-name "$run-u" --entity-type clients --entity-name "$run-c"
show=("$work/out" "$work/err")
check kafka-configs quota-user-client "want request_percentage=50.0 for the pair" \
  eval 'has "user-principal .$run-u., client-id .$run-c. are request_percentage=50.0"'
kt ConfigCommand --alter --entity-type clients --entity-name "$run-c" --delete-config producer_byte_rate
kt ConfigCommand --describe --entity-type clients --entity-name "$run-c"
show=("$work/out" "$work/err")
check kafka-configs quota-delete "want only consumer_byte_rate left" \
  eval 'has "client-id .$run-c. are consumer_byte_rate=2097152.0\$"'
kt ConfigCommand --alter --entity-type users --entity-name "$run-u" --entity-type clients \
  --entity-name "$run-c" --delete-config request_percentage
kt ConfigCommand --alter --entity-type clients --entity-name "$run-c" --delete-config consumer_byte_rate
kt ConfigCommand --describe --entity-type clients
show=("$work/out" "$work/err")
check kafka-configs quota-all-removed "client $run-c still has quotas" eval '[ $rc = 0 ] && lacks "client-id .$run-c."'

# ---------------------------------------------------------------- verifiable producer / consumer
kt TopicCommand --create --topic "$V" --partitions 2
kt VerifiableProducer --topic "$V" --max-messages 500 --acks -1 --repeating-keys 10
save vp
show=("$work/vp" "$work/vp.err")
check kafka-verifiable-producer all-acked "want sent 500, acked 500, 500 send successes, no errors" \
  eval 'has "\"name\":\"tool_data\",\"sent\":500,\"acked\":500," "$work/vp" &&
    [ "$(grep -c "\"name\":\"producer_send_success\"" "$work/vp")" = 500 ] && lacks producer_send_error "$work/vp"'
for proto in classic consumer; do
  kt VerifiableConsumer --topic "$V" --group-id "$run-vc-$proto" --group-protocol "$proto" \
    --max-messages 500 --reset-policy earliest
  save "vc-$proto"
  show=("$work/vc-$proto" "$work/vc-$proto.err")
  check kafka-verifiable-consumer "consume-all-$proto" "want 500 records consumed and committed at 500 in total" \
    eval '[ "$(grep -o "\"name\":\"records_consumed\",\"count\":[0-9]*" "$work/vc-$proto" | awk -F: "{s+=\$NF} END{print s}")" = 500 ] &&
      lacks "\"success\":false" "$work/vc-$proto" &&
      [ "$(grep "offsets_committed" "$work/vc-$proto" | grep -o "\"partition\":[0-9]*,\"offset\":[0-9]*" |
        awk -F"[:,]" "{o[\$2]=\$4} END{for(p in o)s+=o[p]; print s}")" = 500 ]'
done
kt "$CG" --describe --group "$run-vc-classic" --group "$run-vc-consumer"
show=("$work/out" "$work/err")
check kafka-consumer-groups verifiable-groups-lag-0 "want both groups' 2 partitions at LAG 0" \
  eval '[ "$(awk -v t="$V" "\$2==t && \$6==0" "$work/out" | wc -l)" = 4 ]'

# ---------------------------------------------------------------- perf tests
kt_raw ProducerPerformance --topic "$P" --num-records 20000 --record-size 100 --throughput -1 \
  --command-property bootstrap.servers="$bootstrap" acks=all
show=("$work/out" "$work/err")
check kafka-producer-perf-test 20000 "no '20000 records sent'" eval 'has "^20000 records sent"'
kt ConsumerPerformance --topic "$P" --num-records 20000 --group "$run-perf" --timeout 30000
show=("$work/out" "$work/err")
check kafka-consumer-perf-test 20000 "want data.consumed.in.nMsg 20000" \
  eval '[ "$(awk -F", " "NF>=10 && \$1 ~ /^[0-9]/ {print \$5}" "$work/out")" = 20000 ]'

# ---------------------------------------------------------------- cluster, api versions, log dirs, elections
kt_raw ClusterTool list-endpoints --bootstrap-server "$bootstrap"
show=("$work/out" "$work/err")
check kafka-cluster list-endpoints "want an unfenced broker row" eval 'has "^[0-9]+ .* unfenced +broker"'
kt BrokerApiVersionsCommand
show=("$work/out" "$work/err")
check kafka-broker-api-versions list "want Produce/Fetch/Metadata usable versions" \
  eval 'has "Produce\\(0\\): [0-9]+ to [0-9]+ \\[usable: [0-9]+\\]" && has "Fetch\\(1\\): [0-9]+ to [0-9]+ \\[usable" &&
    has "Metadata\\(3\\): [0-9]+ to [0-9]+ \\[usable"'
kt LogDirsCommand --describe --topic-list "$T"
if [ $rc = 0 ]; then
  show=("$work/out" "$work/err")
  check kafka-log-dirs describe "want $T-0..3 in the JSON" eval 'has "\"partition\":\"$T-3\""'
elif has "does not support DESCRIBE_LOG_DIRS" "$work/err"; then
  gap kafka-log-dirs describe "UnsupportedVersionException: DescribeLogDirs (API 35) is not offered"
else fail kafka-log-dirs describe "rc=$rc" "$work/out" "$work/err"; fi
kt LeaderElectionCommand --election-type preferred --topic "$T" --partition 0
if [ $rc = 0 ]; then
  show=("$work/out" "$work/err")
  check kafka-leader-election preferred "want 'Valid replica already elected for partitions $T-0'" \
    eval 'has "already elected for partitions $T-0" "$work/out"'
elif has "does not support ELECT_LEADERS" "$work/err"; then
  gap kafka-leader-election preferred "UnsupportedVersionException: ElectLeaders (API 43) is not offered"
else fail kafka-leader-election preferred "rc=$rc" "$work/out" "$work/err"; fi

# ---------------------------------------------------------------- cleanup and verdict
kt "$CG" --delete --group "$GC" --group "$GN" --group "$run-vc-classic" --group "$run-vc-consumer" \
  --group "$run-perf"
kt TopicCommand --delete --topic "$T"
kt TopicCommand --delete --topic "$V"
kt TopicCommand --delete --topic "$P"
echo "$name: $(($(date +%s) - start)) s, ${#failures[@]} failed, ${#gaps[@]} gaps"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
if [ "${STRICT:-0}" = 1 ] && [ ${#gaps[@]} -gt 0 ]; then
  printf 'GAP (STRICT=1): %s\n' "${gaps[@]}"
  exit 1
fi
echo "PASS $name"

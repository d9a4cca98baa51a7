// Go Kafka client scenarios against a Kafka-wire-protocol broker (sluice, or any Apache Kafka
// 3.9+ cluster): franz-go (kgo + kadm), IBM Sarama and segmentio/kafka-go.
//
//	go run . franz   BOOTSTRAP
//	go run . sarama  BOOTSTRAP [VERSION...]   (default: 3.6.0 2.1.0 0.11.0)
//	go run . kafkago BOOTSTRAP
//	go run . all     BOOTSTRAP
//
// Every check exits non-zero with a "FAIL <client> <scenario>: ..." line on the first mismatch
// and prints "OK <client> <scenario>" lines as scenarios pass.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// runID keeps topic and group names unique across runs against the same broker.
var runID = fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000_000_000)

var current = "" // "<client> <scenario>", for messages

var failed []string // every scenario that failed or could not run

type failure struct{ msg string }

// step runs one scenario: "OK <client> <scenario>" when it returns, "FAIL <client> <scenario>:
// why" when a check fails (failf) or it panics; the run goes on with the next scenario and the
// process exits non-zero at the end. needs: scenarios that must have passed first (otherwise
// "SKIP", which also counts as a failure).
func step(client, scen string, needs []bool, fn func()) (passed bool) {
	current = client + " " + scen
	for _, n := range needs {
		if !n {
			fmt.Printf("SKIP %s %s: an earlier scenario it needs failed\n", client, scen)
			failed = append(failed, current+" (skipped)")
			return false
		}
	}
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if f, isF := r.(failure); isF {
				msg = f.msg
			} else {
				msg = fmt.Sprintf("panic: %v\n%s", r, debug.Stack())
			}
			fmt.Printf("FAIL %s %s: %s\n", client, scen, msg)
			failed = append(failed, current)
			passed = false
		}
	}()
	start := time.Now()
	fn()
	fmt.Printf("OK %s %s (%.1fs)\n", client, scen, time.Since(start).Seconds())
	return true
}

func failf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}

func check(err error, what string) {
	if err != nil {
		failf("%s: %v", what, err)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  [%s] %s\n", current, fmt.Sprintf(format, args...))
}

func name(kind, client, scen string) string {
	return fmt.Sprintf("go-%s-%s-%s-%s", client, scen, kind, runID)
}

// murmur2 is Apache Kafka's Utils.murmur2 (the Java producer's default partitioner for keyed
// records uses toPositive(murmur2(key)) % numPartitions), written out here independently of
// the client libraries so that their partitioners can be checked against it.
func murmur2(data []byte) int32 {
	const seed uint32 = 0x9747b28c
	const m uint32 = 0x5bd1e995
	const r = 24
	length := len(data)
	h := seed ^ uint32(length)
	length4 := length / 4
	for i := 0; i < length4; i++ {
		i4 := i * 4
		k := uint32(data[i4+0]) | uint32(data[i4+1])<<8 | uint32(data[i4+2])<<16 | uint32(data[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch length % 4 {
	case 3:
		h ^= uint32(data[(length & ^3)+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[(length & ^3)+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[length & ^3])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// kafkaPartition is what the Java client's default partitioner picks for a non-null key.
func kafkaPartition(key []byte, n int) int32 {
	return int32((uint32(murmur2(key)) & 0x7fffffff) % uint32(n))
}

// Test vectors from Apache Kafka's UtilsTest.testMurmur2.
func checkMurmur2Vectors() {
	vectors := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k, want := range vectors {
		if got := murmur2([]byte(k)); got != want {
			failf("murmur2(%q) = %d, Kafka's UtilsTest says %d", k, got, want)
		}
	}
}

// rec is one record as produced (with the partition/offset the broker acknowledged, or -1 when
// the client does not report them) or as consumed.
type rec struct {
	Key, Value string
	Partition  int32
	Offset     int64
}

func (r rec) String() string {
	return fmt.Sprintf("p%d@%d key=%q value=%q", r.Partition, r.Offset, r.Key, r.Value)
}

// ledger is the expected content of a topic, per partition in offset order.
type ledger map[int32][]rec

func (l ledger) add(r rec) { l[r.Partition] = append(l[r.Partition], r) }

func (l ledger) sortByOffset() {
	for _, rs := range l {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	}
}

func (l ledger) count() int {
	n := 0
	for _, rs := range l {
		n += len(rs)
	}
	return n
}

// from returns, per partition, the records at or after offsets[p] (all records of partitions
// absent from offsets).
func (l ledger) from(offsets map[int32]int64) ledger {
	out := ledger{}
	for p, rs := range l {
		for _, r := range rs {
			if r.Offset >= offsets[p] {
				out.add(r)
			}
		}
	}
	return out
}

func (l ledger) merge(o ledger) ledger {
	out := ledger{}
	for _, x := range []ledger{l, o} {
		for _, rs := range x {
			for _, r := range rs {
				out.add(r)
			}
		}
	}
	out.sortByOffset()
	return out
}

// checkProducedOrder: the records of one partition must have been assigned increasing offsets
// in the order they were produced (seq is the produce order, encoded in the value).
func checkProducedOrder(l ledger, seq func(rec) int) {
	for p, rs := range l {
		for i := 1; i < len(rs); i++ {
			if rs[i].Offset <= rs[i-1].Offset {
				failf("partition %d: offsets not increasing: %v then %v", p, rs[i-1], rs[i])
			}
			if seq(rs[i]) <= seq(rs[i-1]) {
				failf("partition %d: produce order not kept: %v was produced before %v but has a lower offset", p, rs[i], rs[i-1])
			}
		}
	}
}

// checkKeyPartitions: every keyed record is on the partition Kafka's murmur2 partitioner picks.
func checkKeyPartitions(l ledger, n int) {
	for p, rs := range l {
		for _, r := range rs {
			if want := kafkaPartition([]byte(r.Key), n); want != p {
				failf("key %q landed on partition %d, Kafka's murmur2 partitioner gives %d (%v)", r.Key, p, want, r)
			}
		}
	}
}

// sameRecords compares consumed records (in the order the client delivered them) with the
// expected ledger: same count, per partition the same records in the same order, same keys and
// payloads, no duplicates. Expected offsets of -1 are not compared.
func sameRecords(what string, want ledger, got []rec) {
	gotBy := ledger{}
	for _, r := range got {
		gotBy.add(r)
	}
	if len(got) != want.count() {
		failf("%s: consumed %d records, expected %d (per partition got %s, want %s)", what, len(got), want.count(), sizes(gotBy), sizes(want))
	}
	for p, ws := range want {
		gs := gotBy[p]
		if len(gs) != len(ws) {
			failf("%s: partition %d: consumed %d records, expected %d", what, p, len(gs), len(ws))
		}
		for i := range ws {
			w, g := ws[i], gs[i]
			if (w.Offset >= 0 && g.Offset != w.Offset) || g.Key != w.Key || g.Value != w.Value {
				failf("%s: partition %d record #%d: got %v, expected %v", what, p, i, g, w)
			}
			if i > 0 && g.Offset <= gs[i-1].Offset {
				failf("%s: partition %d: offsets out of order: %v after %v", what, p, g, gs[i-1])
			}
		}
	}
	for p := range gotBy {
		if _, okp := want[p]; !okp {
			failf("%s: consumed %d records from partition %d, expected none", what, len(gotBy[p]), p)
		}
	}
}

func sizes(l ledger) string {
	ps := make([]int, 0, len(l))
	for p := range l {
		ps = append(ps, int(p))
	}
	sort.Ints(ps)
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "p%d:%d ", p, len(l[int32(p)]))
	}
	return strings.TrimSpace(b.String())
}

// midpoints: per partition, the offset halfway through its records (what the group scenarios
// commit before "crashing", so that the restarted consumer must resume exactly there).
func midpoints(l ledger) map[int32]int64 {
	out := map[int32]int64{}
	for p, rs := range l {
		out[p] = rs[len(rs)/2].Offset
	}
	return out
}

var produceSeq int

// payload makes a record value: prefix|produce-sequence|padding. The sequence grows with every
// record produced by this process, so per-partition order can be checked against produce order.
func payload(prefix string) string {
	produceSeq++
	// Compressible (repetitive) so that compressed batches really are compressed.
	return fmt.Sprintf("%s|%07d|%s", prefix, produceSeq, strings.Repeat("sluice", 8))
}

func seqOf(r rec) int {
	parts := strings.Split(r.Value, "|")
	if len(parts) != 3 {
		failf("unexpected value format %q", r.Value)
	}
	var i int
	fmt.Sscanf(parts[1], "%d", &i)
	return i
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: goclients franz|sarama|kafkago|all BOOTSTRAP [sarama versions...]")
		os.Exit(2)
	}
	which, bootstrap := os.Args[1], os.Args[2]
	step("common", "murmur2-partitioners-agree", nil, func() {
		checkMurmur2Vectors()
		checkPartitionersAgree()
	})
	switch which {
	case "franz":
		runFranz(bootstrap)
	case "sarama":
		runSarama(bootstrap, os.Args[3:])
	case "kafkago":
		runKafkaGo(bootstrap)
	case "all":
		runFranz(bootstrap)
		runSarama(bootstrap, nil)
		runKafkaGo(bootstrap)
	default:
		fmt.Fprintln(os.Stderr, "unknown client", which)
		os.Exit(2)
	}
	if len(failed) > 0 {
		fmt.Printf("FAILED (%d): %s\n", len(failed), strings.Join(failed, "; "))
		os.Exit(1)
	}
}

// Old Sarama (github.com/Shopify/sarama v1.22.1, the version Debian ships as
// golang-github-shopify-sarama-dev) against a Kafka-wire-protocol broker:
//
//	go run . BOOTSTRAP
//
//  1. The library's DEFAULT config.Version (V0_8_2_0): Produce v0 (message format v0), Fetch v0,
//     ListOffsets v0, Metadata v0, FindCoordinator v0, OffsetCommit v1, OffsetFetch v1. A
//     SyncProducer (none, gzip, snappy), a plain Consumer from the oldest offset, an
//     OffsetManager committing and fetching an offset of a group.
//  2. Version V0_10_2_0 and 3. V2_0_0_0: the ConsumerGroup API (JoinGroup/SyncGroup/Heartbeat,
//     OffsetCommit v1 because Consumer.Offsets.Retention stays 0, the default): produce, consume in
//     a group, mark half of every partition, leave, produce more, a restarted member must resume
//     exactly at the committed offsets.
//
// Prints "OK sarama-1.22.1(<version>) <scenario>" per passing scenario, "FAIL ..." with the error
// otherwise, and exits non-zero if anything failed.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

var runID = fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000_000_000)

var failed []string

type failure struct{ msg string }

func failf(format string, args ...interface{}) { panic(failure{fmt.Sprintf(format, args...)}) }

func check(err error, what string) {
	if err != nil {
		failf("%s: %v", what, err)
	}
}

func step(client, scen string, needs []bool, fn func()) (passed bool) {
	for _, n := range needs {
		if !n {
			fmt.Printf("SKIP %s %s: an earlier scenario it needs failed\n", client, scen)
			failed = append(failed, client+" "+scen+" (skipped)")
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
			failed = append(failed, client+" "+scen)
			passed = false
		}
	}()
	start := time.Now()
	fn()
	fmt.Printf("OK %s %s (%.1fs)\n", client, scen, time.Since(start).Seconds())
	return true
}

type rec struct {
	Key, Value string
	Partition  int32
	Offset     int64
}

func (r rec) String() string {
	return fmt.Sprintf("p%d@%d key=%q value=%q", r.Partition, r.Offset, r.Key, r.Value)
}

type ledger map[int32][]rec

func (l ledger) add(r rec) { l[r.Partition] = append(l[r.Partition], r) }

func (l ledger) count() int {
	n := 0
	for _, rs := range l {
		n += len(rs)
	}
	return n
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
	for _, rs := range out {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	}
	return out
}

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

func (l ledger) ends() map[int32]int64 {
	out := map[int32]int64{}
	for p, rs := range l {
		out[p] = rs[len(rs)-1].Offset + 1
	}
	return out
}

func (l ledger) midpoints() map[int32]int64 {
	out := map[int32]int64{}
	for p, rs := range l {
		out[p] = rs[len(rs)/2].Offset
	}
	return out
}

func sizes(l ledger) string {
	ps := []int{}
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

// sameRecords: consumed records (delivery order) equal the expected ledger: count, per
// partition order and offsets, keys, payloads, no duplicates.
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
			if gs[i] != ws[i] {
				failf("%s: partition %d record #%d: got %v, expected %v", what, p, i, gs[i], ws[i])
			}
		}
	}
	for p := range gotBy {
		if _, found := want[p]; !found {
			failf("%s: consumed %d records from partition %d, expected none", what, len(gotBy[p]), p)
		}
	}
}

var produceSeq int

func payload(prefix string) string {
	produceSeq++
	return fmt.Sprintf("%s|%07d|%s", prefix, produceSeq, strings.Repeat("sluice", 8))
}

func seqOf(r rec) int {
	var i int
	parts := strings.Split(r.Value, "|")
	if len(parts) == 3 {
		fmt.Sscanf(parts[1], "%d", &i)
	}
	return i
}

func config(v sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	if v != (sarama.KafkaVersion{}) {
		c.Version = v
	}
	c.ClientID = "sluice-go-sarama-1.22.1"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.MaxWaitTime = 500 * time.Millisecond
	// Consumer.Offsets.Retention stays 0 (the default): the offset manager then sends
	// OffsetCommit v1 whatever the version. That is deliberate.
	return c
}

// produce sends n keyed records in one SendMessages call; returns them with their acks.
func produce(bootstrap string, cfg *sarama.Config, topic, prefix string, n int) ledger {
	p, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	check(err, "NewSyncProducer")
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("key-%03d", i%97)), Value: sarama.StringEncoder(payload(prefix))}
	}
	if err := p.SendMessages(msgs); err != nil {
		if pe, isPE := err.(sarama.ProducerErrors); isPE && len(pe) > 0 {
			failf("SendMessages (%s): %d of %d failed, first: %v", prefix, len(pe), n, pe[0].Err)
		}
		failf("SendMessages (%s): %v", prefix, err)
	}
	l := ledger{}
	for _, m := range msgs {
		k, _ := m.Key.Encode()
		v, _ := m.Value.Encode()
		l.add(rec{string(k), string(v), m.Partition, m.Offset})
	}
	l = l.merge(ledger{})
	// Each partition: offsets strictly increasing in produce order.
	for p, rs := range l {
		for i := 1; i < len(rs); i++ {
			if rs[i].Offset <= rs[i-1].Offset || seqOf(rs[i]) <= seqOf(rs[i-1]) {
				failf("%s: partition %d: acks out of produce order: %v then %v", prefix, p, rs[i-1], rs[i])
			}
		}
	}
	return l
}

// consumePlain reads every partition of want from the oldest offset with a plain Consumer.
func consumePlain(bootstrap string, cfg *sarama.Config, topic string, want ledger) []rec {
	c, err := sarama.NewConsumer([]string{bootstrap}, cfg)
	check(err, "NewConsumer")
	defer c.Close()
	var got []rec
	for p, rs := range want {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		check(err, fmt.Sprintf("ConsumePartition(%s, %d, OffsetOldest)", topic, p))
		deadline := time.After(60 * time.Second)
		n := 0
	loop:
		for n < len(rs) {
			select {
			case m := <-pc.Messages():
				got = append(got, rec{string(m.Key), string(m.Value), m.Partition, m.Offset})
				n++
			case e := <-pc.Errors():
				pc.Close()
				failf("partition consumer %d: %v", p, e.Err)
			case <-deadline:
				break loop
			}
		}
		// Anything more would be a duplicate.
		select {
		case m := <-pc.Messages():
			got = append(got, rec{string(m.Key), string(m.Value), m.Partition, m.Offset})
		case <-time.After(time.Second):
		}
		pc.Close()
	}
	return got
}

type handler struct {
	mu   sync.Mutex
	got  []rec
	want int
	mark func(int32, int64) bool
	done chan struct{}
	once sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, open := <-c.Messages():
			if !open {
				return nil
			}
			h.mu.Lock()
			h.got = append(h.got, rec{string(m.Key), string(m.Value), m.Partition, m.Offset})
			n := len(h.got)
			h.mu.Unlock()
			if h.mark(m.Partition, m.Offset) {
				s.MarkMessage(m, "")
			}
			if n >= h.want {
				h.once.Do(func() { close(h.done) })
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

// groupRun: a ConsumerGroup member consumes until want messages (+ linger), marks what mark
// selects; the offsets are committed by the library (every second and when the session ends).
func groupRun(bootstrap string, cfg *sarama.Config, group, topic string, want int, mark func(int32, int64) bool) []rec {
	cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, cfg)
	check(err, "NewConsumerGroup")
	h := &handler{want: want, mark: mark, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var errs []error
	var emu sync.Mutex
	go func() {
		for e := range cg.Errors() {
			emu.Lock()
			errs = append(errs, e)
			emu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				exited <- err
				return
			}
		}
		exited <- nil
	}()
	select {
	case <-h.done:
	case err := <-exited:
		cancel()
		cg.Close()
		failf("ConsumerGroup.Consume: %v", err)
	case <-time.After(60 * time.Second):
	}
	time.Sleep(1500 * time.Millisecond)
	cancel()
	if err := <-exited; err != nil {
		cg.Close()
		failf("ConsumerGroup.Consume: %v", err)
	}
	check(cg.Close(), "ConsumerGroup.Close")
	emu.Lock()
	defer emu.Unlock()
	if len(errs) > 0 {
		failf("consumer group errors: %v", errs)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got
}

func checkCommitted(bootstrap string, cfg *sarama.Config, group, topic string, want map[int32]int64) {
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	check(err, "NewClusterAdmin")
	defer admin.Close()
	parts := []int32{}
	for p := range want {
		parts = append(parts, p)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	check(err, "ListConsumerGroupOffsets (OffsetFetch v1)")
	for p, w := range want {
		b := resp.GetBlock(topic, p)
		if b == nil {
			failf("OffsetFetch: nothing for %s[%d]", topic, p)
		}
		if b.Err != sarama.ErrNoError || b.Offset != w {
			failf("OffsetFetch %s[%d]: offset %d err %v, expected %d", topic, p, b.Offset, b.Err, w)
		}
	}
}

func defaultVersion(bootstrap string) {
	client := "sarama-1.22.1(default " + sarama.NewConfig().Version.String() + ")"
	topic := "go-sarama122-default-topic-" + runID
	group := "go-sarama122-default-group-" + runID
	var all ledger

	produced := step(client, "sync-producer-none-gzip-snappy", nil, func() {
		all = ledger{}
		for _, c := range []struct {
			name  string
			codec sarama.CompressionCodec
		}{{"none", sarama.CompressionNone}, {"gzip", sarama.CompressionGZIP}, {"snappy", sarama.CompressionSnappy}} {
			cfg := config(sarama.KafkaVersion{})
			cfg.Producer.Compression = c.codec
			all = all.merge(produce(bootstrap, cfg, topic, "sarama122-"+c.name, 500))
		}
		if all.count() != 1500 {
			failf("1500 records produced, %d acknowledged", all.count())
		}
		for p, rs := range all {
			for i, r := range rs {
				if r.Offset != int64(i) {
					failf("partition %d: record #%d acknowledged at offset %d; a fresh partition's offsets are 0,1,2,...", p, i, r.Offset)
				}
			}
		}
	})

	step(client, "consumer-from-oldest", []bool{produced}, func() {
		got := consumePlain(bootstrap, config(sarama.KafkaVersion{}), topic, all)
		sameRecords("ConsumePartition from the oldest offset", all, got)
	})

	step(client, "offset-manager-commit-fetch", nil, func() {
		cfg := config(sarama.KafkaVersion{})
		cfg.Consumer.Offsets.Initial = sarama.OffsetNewest
		cl, err := sarama.NewClient([]string{bootstrap}, cfg)
		check(err, "NewClient")
		defer cl.Close()
		if _, err := cl.Partitions(topic); err != nil {
			failf("Metadata for %s: %v", topic, err)
		}
		manage := func() (sarama.OffsetManager, sarama.PartitionOffsetManager) {
			om, err := sarama.NewOffsetManagerFromClient(group, cl)
			check(err, "NewOffsetManagerFromClient")
			pom, err := om.ManagePartition(topic, 0)
			if err != nil {
				om.Close()
				failf("ManagePartition (OffsetFetch v1): %v", err)
			}
			return om, pom
		}
		om, pom := manage()
		if off, _ := pom.NextOffset(); off != sarama.OffsetNewest {
			om.Close()
			failf("a group that never committed: NextOffset %d, expected the initial offset %d", off, sarama.OffsetNewest)
		}
		pom.MarkOffset(123, "sluice-meta")
		pom.AsyncClose()
		om.Close() // flushes the commit (OffsetCommit v1)
		var errs []string
		for e := range pom.Errors() {
			errs = append(errs, e.Error())
		}
		if len(errs) > 0 {
			failf("OffsetCommit v1: %s", strings.Join(errs, "; "))
		}
		om, pom = manage()
		off, meta := pom.NextOffset()
		pom.AsyncClose()
		om.Close()
		if off != 123 || meta != "sluice-meta" {
			failf("OffsetFetch v1 after committing 123/\"sluice-meta\": got %d/%q", off, meta)
		}
	})
}

// groupVersion: the ConsumerGroup API with config.Version = v.
func groupVersion(bootstrap string, v sarama.KafkaVersion, createTopic bool) {
	client := "sarama-1.22.1(V" + strings.ReplaceAll(v.String(), ".", "_") + ")"
	tag := strings.ReplaceAll(v.String(), ".", "")
	topic := "go-sarama122-v" + tag + "-topic-" + runID
	group := "go-sarama122-v" + tag + "-group-" + runID
	var all ledger
	cfg := config(v)
	created := true
	if createTopic {
		created = step(client, "admin-create-topic", nil, func() {
			admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
			check(err, "NewClusterAdmin")
			defer admin.Close()
			check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false), "CreateTopic")
		})
	}
	produced := step(client, "sync-producer-none-gzip-snappy", []bool{created}, func() {
		all = ledger{}
		for _, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy} {
			pc := config(v)
			pc.Producer.Compression = codec
			all = all.merge(produce(bootstrap, pc, topic, "sarama122-"+tag, 200))
		}
		if createTopic && len(all) != 3 {
			failf("records should cover 3 partitions: %s", sizes(all))
		}
	})
	step(client, "consumer-group-mark-commit-restart", []bool{produced}, func() {
		mid := all.midpoints()
		got := groupRun(bootstrap, cfg, group, topic, all.count(), func(p int32, off int64) bool { return off < mid[p] })
		sameRecords("first group member", all, got)
		checkCommitted(bootstrap, cfg, group, topic, mid)
		more := produce(bootstrap, config(v), topic, "sarama122-"+tag+"-more", 150)
		want := all.from(mid).merge(more)
		got = groupRun(bootstrap, cfg, group, topic, want.count(), func(int32, int64) bool { return true })
		sameRecords("restarted group member (must resume at the committed offsets)", want, got)
		checkCommitted(bootstrap, cfg, group, topic, all.merge(more).ends())
	})
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: saramaold BOOTSTRAP")
		os.Exit(2)
	}
	bootstrap := os.Args[1]
	if v := sarama.NewConfig().Version; v != sarama.V0_8_2_0 {
		fmt.Printf("FAIL sarama-1.22.1: default config.Version is %s, this scenario expects 0.8.2.0\n", v)
		os.Exit(1)
	}
	defaultVersion(bootstrap)
	groupVersion(bootstrap, sarama.V0_10_2_0, false)
	groupVersion(bootstrap, sarama.V2_0_0_0, true)
	if len(failed) > 0 {
		fmt.Printf("FAILED (%d): %s\n", len(failed), strings.Join(failed, "; "))
		os.Exit(1)
	}
}

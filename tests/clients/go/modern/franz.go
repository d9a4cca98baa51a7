package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func franzClient(bootstrap string, opts ...kgo.Opt) *kgo.Client {
	all := append([]kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.ClientID("sluice-go-franz")}, opts...)
	cl, err := kgo.NewClient(all...)
	check(err, "kgo.NewClient")
	return cl
}

func timeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

var franzCodecs = []struct {
	name  string
	codec kgo.CompressionCodec
}{
	{"none", kgo.NoCompression()},
	{"gzip", kgo.GzipCompression()},
	{"snappy", kgo.SnappyCompression()},
	{"lz4", kgo.Lz4Compression()},
	{"zstd", kgo.ZstdCompression()},
}

// franzProduce produces n keyed records synchronously (idempotent: the kgo default) and returns
// them with the partitions and offsets the broker acknowledged.
func franzProduce(cl *kgo.Client, topic, prefix string, n int) ledger {
	rs := make([]*kgo.Record, n)
	for i := range rs {
		rs[i] = &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("key-%03d", i%97)), Value: []byte(payload(prefix))}
	}
	ctx, cancel := timeout(60 * time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		failf("produce %d records (%s): %v", n, prefix, err)
	}
	l := ledger{}
	for _, r := range rs {
		l.add(rec{string(r.Key), string(r.Value), r.Partition, r.Offset})
	}
	l.sortByOffset()
	return l
}

// franzPoll polls until want records arrived (or the deadline), then keeps polling for linger
// to catch anything delivered beyond what was expected (duplicates, re-delivery).
func franzPoll(cl *kgo.Client, want int, deadline, linger time.Duration) []rec {
	var got []rec
	poll := func(ctx context.Context) {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			failf("fetch error on %s[%d]: %v", t, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, rec{string(r.Key), string(r.Value), r.Partition, r.Offset})
		})
	}
	end := time.Now().Add(deadline)
	for len(got) < want && time.Now().Before(end) {
		ctx, cancel := context.WithDeadline(context.Background(), end)
		poll(ctx)
		cancel()
	}
	end = time.Now().Add(linger)
	for time.Now().Before(end) {
		ctx, cancel := context.WithDeadline(context.Background(), end)
		poll(ctx)
		cancel()
	}
	return got
}

func offsetsOf(l ledger) map[int32]int64 { // end offset per partition (last offset + 1)
	out := map[int32]int64{}
	for p, rs := range l {
		out[p] = rs[len(rs)-1].Offset + 1
	}
	return out
}

func checkListed(what string, lo kadm.ListedOffsets, err error, topic string, want map[int32]int64) {
	check(err, what)
	if e := lo.Error(); e != nil {
		failf("%s: %v", what, e)
	}
	for p, w := range want {
		o, found := lo.Lookup(topic, p)
		if !found {
			failf("%s: partition %d missing", what, p)
		}
		if o.Offset != w {
			failf("%s: partition %d: offset %d, expected %d", what, p, o.Offset, w)
		}
	}
}

func runFranz(bootstrap string) {
	admCl := franzClient(bootstrap)
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	prod := franzClient(bootstrap)
	defer prod.Close()
	topic := name("topic", "franz", "main")
	var base, extra, all ledger

	// ---- topic creation, produce with every codec, key placement, offsets ----
	produced := step("franz", "create-topic+produce-codecs+key-partition-murmur2", nil, func() {
		ctx, cancel := timeout(30 * time.Second)
		resp, err := adm.CreateTopic(ctx, 3, 1, nil, topic)
		cancel()
		check(err, "kadm CreateTopic")
		check(resp.Err, "kadm CreateTopic "+topic)
		if resp.NumPartitions != -1 && resp.NumPartitions != 3 {
			failf("CreateTopic answered %d partitions, asked 3", resp.NumPartitions)
		}
		base = ledger{}
		for _, c := range franzCodecs {
			pc := franzClient(bootstrap, kgo.ProducerBatchCompression(c.codec))
			l := franzProduce(pc, topic, "franz-"+c.name, 1000)
			pc.Close()
			base = base.merge(l)
		}
		checkProducedOrder(base, seqOf)
		checkKeyPartitions(base, 3)
		for p, rs := range base {
			for i, r := range rs {
				if r.Offset != int64(i) {
					failf("partition %d: record #%d has offset %d: offsets of a fresh partition must be 0,1,2,...", p, i, r.Offset)
				}
			}
		}
		if len(base) != 3 || base.count() != 5000 {
			failf("expected 5000 records over 3 partitions, acks say %s", sizes(base))
		}
	})
	// Every codec read back by a plain (group-less) consumer.
	step("franz", "consume-codecs", []bool{produced}, func() {
		c := franzClient(bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
		got := franzPoll(c, base.count(), 60*time.Second, time.Second)
		c.Close()
		sameRecords("consumer from the start", base, got)
	})

	// ---- kadm: list topics, configs, offsets ----
	step("franz", "kadm-list-topics", []bool{produced}, func() {
		ctx, cancel := timeout(30 * time.Second)
		tds, err := adm.ListTopics(ctx)
		cancel()
		check(err, "ListTopics")
		td, found := tds[topic]
		if !found {
			failf("ListTopics does not list %s (%d topics listed)", topic, len(tds))
		}
		check(td.Err, "ListTopics "+topic)
		if len(td.Partitions) != 3 {
			failf("ListTopics: %s has %d partitions, expected 3", topic, len(td.Partitions))
		}
	})

	step("franz", "kadm-describe-alter-configs", []bool{produced}, func() {
		describe := func() kadm.ResourceConfig {
			ctx, cancel := timeout(30 * time.Second)
			defer cancel()
			rcs, err := adm.DescribeTopicConfigs(ctx, topic)
			check(err, "DescribeTopicConfigs")
			rc, err := rcs.On(topic, nil)
			check(err, "DescribeTopicConfigs result")
			check(rc.Err, "DescribeTopicConfigs "+topic)
			return rc
		}
		find := func(rc kadm.ResourceConfig, key string) (kadm.Config, bool) {
			for _, c := range rc.Configs {
				if c.Key == key {
					return c, true
				}
			}
			return kadm.Config{}, false
		}
		rc := describe()
		if _, found := find(rc, "retention.ms"); !found {
			failf("DescribeConfigs of %s has no retention.ms (%d configs)", topic, len(rc.Configs))
		}
		if _, found := find(rc, "cleanup.policy"); !found {
			failf("DescribeConfigs of %s has no cleanup.policy", topic)
		}
		ctx, cancel := timeout(30 * time.Second)
		ars, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("3600000")}}, topic)
		cancel()
		check(err, "IncrementalAlterConfigs retention.ms")
		for _, ar := range ars {
			if ar.Err != nil {
				failf("IncrementalAlterConfigs %s: %v %s", ar.Name, ar.Err, ar.ErrMessage)
			}
		}
		c, found := find(describe(), "retention.ms")
		if !found || c.MaybeValue() != "3600000" {
			failf("retention.ms read back as %q (found=%v), expected 3600000", c.MaybeValue(), found)
		}
		if c.Source != kmsg.ConfigSourceDynamicTopicConfig {
			failf("retention.ms source is %v after altering it, expected DYNAMIC_TOPIC_CONFIG", c.Source)
		}
	})

	listed := step("franz", "kadm-list-offsets-start-end-time", []bool{produced}, func() {
		ctx, cancel := timeout(30 * time.Second)
		lo, err := adm.ListStartOffsets(ctx, topic)
		checkListed("ListOffsets earliest", lo, err, topic, map[int32]int64{0: 0, 1: 0, 2: 0})
		lo, err = adm.ListEndOffsets(ctx, topic)
		checkListed("ListOffsets latest", lo, err, topic, offsetsOf(base))
		cancel()
		// Records produced after tMid are found by timestamp.
		time.Sleep(50 * time.Millisecond)
		tMid := time.Now().UnixMilli()
		time.Sleep(50 * time.Millisecond)
		extra = franzProduce(prod, topic, "franz-extra", 300)
		if len(extra) != 3 {
			failf("the 300 extra records should cover all 3 partitions: %s", sizes(extra))
		}
		all = base.merge(extra)
		firstExtra := map[int32]int64{}
		for p, rs := range extra {
			firstExtra[p] = rs[0].Offset
			if rs[0].Offset != offsetsOf(base)[p] {
				failf("partition %d: first extra record at offset %d, the end offset was %d", p, rs[0].Offset, offsetsOf(base)[p])
			}
		}
		ctx, cancel = timeout(30 * time.Second)
		defer cancel()
		lo, err = adm.ListOffsetsAfterMilli(ctx, tMid, topic)
		checkListed("ListOffsets by timestamp", lo, err, topic, firstExtra)
		lo, err = adm.ListOffsetsAfterMilli(ctx, time.Now().Add(time.Hour).UnixMilli(), topic)
		checkListed("ListOffsets by a future timestamp (end offset expected)", lo, err, topic, offsetsOf(all))
	})

	// ---- classic consumer group: consume, commit half, describe, lag, restart, resume ----
	grouped := step("franz", "group-classic-commit-restart-lag", []bool{listed}, func() {
		franzGroupScenario(bootstrap, adm, topic, name("group", "franz", "classic"), all, prod, false)
	})

	franzKIP848(bootstrap, adm)

	// ---- delete records ----
	step("franz", "kadm-delete-records", []bool{grouped}, func() {
		os := make(kadm.Offsets)
		os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 10, LeaderEpoch: -1})
		ctx, cancel := timeout(30 * time.Second)
		drs, err := adm.DeleteRecords(ctx, os)
		cancel()
		check(err, "DeleteRecords")
		dr, found := drs.Lookup(topic, 0)
		if !found {
			failf("DeleteRecords: no answer for partition 0")
		}
		check(dr.Err, "DeleteRecords partition 0")
		if dr.LowWatermark != 10 {
			failf("DeleteRecords: low watermark %d, expected 10", dr.LowWatermark)
		}
		ctx, cancel = timeout(30 * time.Second)
		lo, err := adm.ListStartOffsets(ctx, topic)
		cancel()
		checkListed("ListOffsets earliest after DeleteRecords", lo, err, topic, map[int32]int64{0: 10, 1: 0, 2: 0})
		c := franzClient(bootstrap, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
		want := ledger{0: all[0][10:]}
		got := franzPoll(c, want.count(), 30*time.Second, time.Second)
		c.Close()
		sameRecords("partition 0 read from the start after DeleteRecords", want, got)
	})

	// ---- transactions ----
	step("franz", "transactions-commit-abort-read-committed", nil, func() {
		franzTransactions(bootstrap, adm)
	})

	// ---- delete topic ----
	step("franz", "kadm-delete-topic", []bool{produced}, func() {
		ctx, cancel := timeout(30 * time.Second)
		resp, err := adm.DeleteTopic(ctx, topic)
		cancel()
		check(err, "DeleteTopics")
		check(resp.Err, "DeleteTopics "+topic)
		gone := false
		for i := 0; i < 50 && !gone; i++ {
			ctx, cancel := timeout(10 * time.Second)
			tds, err := adm.ListTopics(ctx)
			cancel()
			check(err, "ListTopics")
			_, present := tds[topic]
			gone = !present
			if !gone {
				time.Sleep(200 * time.Millisecond)
			}
		}
		if !gone {
			failf("%s still listed 10s after DeleteTopics", topic)
		}
	})
}

// requestKeys counts the requests a client wrote, by API key.
type requestKeys struct {
	mu   sync.Mutex
	seen map[int16]int
}

func (k *requestKeys) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		k.mu.Lock()
		k.seen[key]++
		k.mu.Unlock()
	}
}

func (k *requestKeys) count(key kmsg.Key) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seen[int16(key)]
}

// franzGroupScenario: a group member consumes everything in `all` from the start and checks it
// record by record, commits the midpoint of every partition (explicit OffsetCommit), leaves; the
// lag is checked; more records are produced; a new member of the group must resume exactly at
// the committed offsets (no re-delivery, nothing skipped); it commits everything; lag is 0.
func franzGroupScenario(bootstrap string, adm *kadm.Client, topic, group string, all ledger, prod *kgo.Client, kip848 bool) {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	if kip848 {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	// Which group protocol really ran: franz falls back to the classic one silently.
	keys := &requestKeys{seen: map[int16]int{}}
	opts = append(opts, kgo.WithHooks(keys))
	defer func() {
		if kip848 && (keys.count(kmsg.ConsumerGroupHeartbeat) == 0 || keys.count(kmsg.JoinGroup) > 0) {
			failf("expected the KIP-848 protocol: %d ConsumerGroupHeartbeat, %d JoinGroup requests sent", keys.count(kmsg.ConsumerGroupHeartbeat), keys.count(kmsg.JoinGroup))
		}
		if !kip848 && (keys.count(kmsg.JoinGroup) == 0 || keys.count(kmsg.ConsumerGroupHeartbeat) > 0) {
			failf("expected the classic protocol: %d JoinGroup, %d ConsumerGroupHeartbeat requests sent", keys.count(kmsg.JoinGroup), keys.count(kmsg.ConsumerGroupHeartbeat))
		}
	}()
	describe := func(members int) {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		if kip848 {
			dgs, err := adm.DescribeConsumerGroups(ctx, group)
			check(err, "ConsumerGroupDescribe")
			dg := dgs[group]
			check(dg.Err, "ConsumerGroupDescribe "+group)
			if len(dg.Members) != members {
				failf("ConsumerGroupDescribe: %d members, expected %d (state %s)", len(dg.Members), members, dg.State)
			}
			if members == 1 && len(dg.AssignedPartitions()[topic]) != 3 {
				failf("ConsumerGroupDescribe: member assigned %v, expected all 3 partitions", dg.AssignedPartitions())
			}
			return
		}
		dgs, err := adm.DescribeGroups(ctx, group)
		check(err, "DescribeGroups")
		dg := dgs[group]
		check(dg.Err, "DescribeGroups "+group)
		if len(dg.Members) != members || dg.ProtocolType != "consumer" {
			failf("DescribeGroups: %d members, protocol type %q, state %s; expected %d members, \"consumer\"", len(dg.Members), dg.ProtocolType, dg.State, members)
		}
		if members == 1 {
			if got := len(dg.AssignedPartitions()[topic]); got != 3 {
				failf("DescribeGroups: member assigned %v, expected all 3 partitions", dg.AssignedPartitions())
			}
			if dg.State != "Stable" {
				failf("DescribeGroups: state %q with an active member, expected Stable", dg.State)
			}
		}
	}

	c := franzClient(bootstrap, opts...)
	got := franzPoll(c, all.count(), 60*time.Second, 1500*time.Millisecond)
	sameRecords("first group member", all, got)
	describe(1)
	mid := midpoints(all)
	commit := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for p, o := range mid {
		commit[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	{
		ctx, cancel := timeout(30 * time.Second)
		var cerr error
		c.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				cerr = err
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if e := kerr.ErrorForCode(p.ErrorCode); e != nil && cerr == nil {
						cerr = fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, e)
					}
				}
			}
		})
		cancel()
		check(cerr, "OffsetCommit")
	}
	c.Close() // leaves the group

	// Lag with the group empty: end - committed.
	checkGroupLag(adm, group, topic, kip848, mid, offsetsOf(all))

	// More records while nobody consumes; the restarted member must start at the commits.
	more := franzProduce(prod, topic, "franz-more-"+group, 150)
	want := all.from(mid).merge(more)
	c = franzClient(bootstrap, opts...)
	got = franzPoll(c, want.count(), 60*time.Second, 1500*time.Millisecond)
	sameRecords("restarted group member (must resume at the committed offsets)", want, got)
	describe(1)
	{
		ctx, cancel := timeout(30 * time.Second)
		check(c.CommitUncommittedOffsets(ctx), "OffsetCommit (everything consumed)")
		cancel()
	}
	c.Close()
	final := offsetsOf(all.merge(more))
	ctx, cancel := timeout(30 * time.Second)
	defer cancel()
	ors, err := adm.FetchOffsets(ctx, group)
	check(err, "OffsetFetch")
	for p, w := range final {
		o, found := ors.Lookup(topic, p)
		if !found {
			failf("OffsetFetch: no committed offset for %s[%d]", topic, p)
		}
		check(o.Err, "OffsetFetch")
		if o.At != w {
			failf("OffsetFetch %s[%d]: committed %d, expected %d", topic, p, o.At, w)
		}
	}
	checkGroupLag(adm, group, topic, kip848, final, final)
	for k := range more {
		all[k] = append(all[k], more[k]...)
	}
}

// checkGroupLag: with no member left, the group is Empty and its lag per partition is
// end - committed. kadm.Lag describes the group with DescribeGroups, which only knows classic
// groups (Kafka 4 answers GROUP_ID_NOT_FOUND for a KIP-848 group), so a KIP-848 group is
// described with ConsumerGroupDescribe and its lag computed from OffsetFetch and ListOffsets.
func checkGroupLag(adm *kadm.Client, group, topic string, kip848 bool, commits, ends map[int32]int64) {
	ctx, cancel := timeout(30 * time.Second)
	defer cancel()
	verify := func(p int32, commit, end, lag int64) {
		if commit != commits[p] || end != ends[p] || lag != ends[p]-commits[p] {
			failf("lag of %s[%d]: commit %d end %d lag %d; expected commit %d end %d lag %d", topic, p, commit, end, lag, commits[p], ends[p], ends[p]-commits[p])
		}
	}
	if !kip848 {
		lags, err := adm.Lag(ctx, group)
		check(err, "Lag")
		gl := lags[group]
		check(gl.Error(), "Lag "+group)
		for p := range ends {
			ml, found := gl.Lag.Lookup(topic, p)
			if !found {
				failf("Lag: no entry for %s[%d]", topic, p)
			}
			check(ml.Err, fmt.Sprintf("Lag %s[%d]", topic, p))
			verify(p, ml.Commit.At, ml.End.Offset, ml.Lag)
		}
		if gl.State != "Empty" {
			failf("DescribeGroups after the only member left: state %q, expected Empty", gl.State)
		}
		return
	}
	dgs, err := adm.DescribeConsumerGroups(ctx, group)
	check(err, "ConsumerGroupDescribe")
	dg := dgs[group]
	check(dg.Err, "ConsumerGroupDescribe "+group)
	if dg.State != "Empty" || len(dg.Members) != 0 {
		failf("ConsumerGroupDescribe after the only member left: state %q, %d members; expected Empty", dg.State, len(dg.Members))
	}
	ors, err := adm.FetchOffsets(ctx, group)
	check(err, "OffsetFetch")
	lo, err := adm.ListEndOffsets(ctx, topic)
	check(err, "ListOffsets latest")
	for p := range ends {
		o, found := ors.Lookup(topic, p)
		if !found {
			failf("OffsetFetch: no committed offset for %s[%d]", topic, p)
		}
		check(o.Err, "OffsetFetch")
		e, found := lo.Lookup(topic, p)
		if !found {
			failf("ListOffsets: no end offset for %s[%d]", topic, p)
		}
		check(e.Err, "ListOffsets")
		verify(p, o.At, e.Offset, e.Offset-o.At)
	}
}

// franzKIP848: the same group scenario with the KIP-848 "consumer" group protocol
// (kgo.ServerSideBalancer), on its own topic. Skipped (and said so) when the broker does not
// offer ConsumerGroupHeartbeat v1+ (Kafka 3.9 does not by default; franz would silently fall
// back to the classic protocol).
func franzKIP848(bootstrap string, adm *kadm.Client) {
	ctx, cancel := timeout(30 * time.Second)
	vs, err := adm.ApiVersions(ctx)
	cancel()
	supported := err == nil && len(vs) > 0
	for _, v := range vs {
		if max, exists := v.KeyMaxVersion(int16(kmsg.ConsumerGroupHeartbeat)); v.Err != nil || !exists || max < 1 {
			supported = false
		}
	}
	if !supported {
		fmt.Printf("SKIP franz group-kip848: the broker does not offer ConsumerGroupHeartbeat v1+ (ApiVersions err: %v)\n", err)
		return
	}
	group := name("group", "franz", "kip848")
	ran := step("franz", "group-kip848-commit-restart-lag", nil, func() {
		topic := name("topic", "franz", "kip848")
		ctx, cancel := timeout(30 * time.Second)
		resp, err := adm.CreateTopic(ctx, 3, 1, nil, topic)
		cancel()
		check(err, "CreateTopic")
		check(resp.Err, "CreateTopic "+topic)
		prod := franzClient(bootstrap)
		defer prod.Close()
		all := ledger{}
		for _, c := range franzCodecs {
			pc := franzClient(bootstrap, kgo.ProducerBatchCompression(c.codec))
			all = all.merge(franzProduce(pc, topic, "franz848-"+c.name, 120))
			pc.Close()
		}
		franzGroupScenario(bootstrap, adm, topic, group, all, prod, true)
	})
	// ListGroups v5+ names each group's type: "consumer" for a KIP-848 group (also once it is
	// empty), "classic" otherwise; a types filter of ["consumer"] lists it.
	step("franz", "group-kip848-listgroups-type", []bool{ran}, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		lg, err := adm.ListGroups(ctx)
		check(err, "ListGroups")
		g, found := lg[group]
		if !found || g.GroupType != "consumer" {
			failf("ListGroups: %s found=%v GroupType %q, expected \"consumer\" (Kafka: \"consumer\" for KIP-848 groups, \"classic\" for the others)", group, found, g.GroupType)
		}
		lg, err = adm.ListGroupsByType(ctx, []string{"consumer"})
		check(err, "ListGroups(types=[consumer])")
		if _, found := lg[group]; !found {
			failf("ListGroups with TypesFilter [consumer] does not list the KIP-848 group %s (%d groups listed)", group, len(lg))
		}
	})
}

// franzTransactions: one committed transaction, one aborted (flushed, so its records are in
// the log), another committed; read_committed sees exactly the committed records in order,
// read_uncommitted sees the aborted ones too.
func franzTransactions(bootstrap string, adm *kadm.Client) {
	topic := name("topic", "franz", "txn")
	ctx, cancel := timeout(30 * time.Second)
	resp, err := adm.CreateTopic(ctx, 3, 1, nil, topic)
	cancel()
	check(err, "CreateTopic")
	check(resp.Err, "CreateTopic "+topic)

	tp := franzClient(bootstrap, kgo.TransactionalID(name("txnid", "franz", "txn")), kgo.DefaultProduceTopic(topic))
	defer tp.Close()
	committed, aborted := ledger{}, ledger{}
	txn := func(prefix string, n int, commit bool) {
		check(tp.BeginTransaction(), "BeginTransaction")
		l := franzProduce(tp, topic, prefix, n)
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		check(tp.Flush(ctx), "Flush")
		how := kgo.TryAbort
		if commit {
			how = kgo.TryCommit
		}
		check(tp.EndTransaction(ctx, how), fmt.Sprintf("EndTransaction(commit=%v)", commit))
		if commit {
			committed = committed.merge(l)
		} else {
			aborted = aborted.merge(l)
		}
	}
	txn("franz-txn-commit1", 100, true)
	txn("franz-txn-abort", 50, false)
	txn("franz-txn-commit2", 100, true)

	for _, mode := range []struct {
		name  string
		level kgo.IsolationLevel
		want  ledger
	}{
		{"read_committed", kgo.ReadCommitted(), committed},
		{"read_uncommitted", kgo.ReadUncommitted(), committed.merge(aborted)},
	} {
		c := franzClient(bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(mode.level), kgo.FetchMaxWait(500*time.Millisecond))
		got := franzPoll(c, mode.want.count(), 30*time.Second, 1500*time.Millisecond)
		c.Close()
		sameRecords(mode.name+" consumer", mode.want, got)
	}
}

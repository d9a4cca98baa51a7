package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig(v sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = v
	c.ClientID = "sluice-go-sarama"
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewMurmur2Partitioner // Kafka's partitioner, checked below
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false // commits are explicit (session.Commit)
	c.Consumer.MaxWaitTime = 500 * time.Millisecond
	c.Metadata.AllowAutoTopicCreation = false
	return c
}

type saramaCodec struct {
	name  string
	codec sarama.CompressionCodec
	min   sarama.KafkaVersion
}

var saramaCodecs = []saramaCodec{
	{"none", sarama.CompressionNone, sarama.V0_8_2_0},
	{"gzip", sarama.CompressionGZIP, sarama.V0_8_2_0},
	{"snappy", sarama.CompressionSnappy, sarama.V0_8_2_0},
	{"lz4", sarama.CompressionLZ4, sarama.V0_10_0_0},
	{"zstd", sarama.CompressionZSTD, sarama.V2_1_0_0},
}

// saramaProduce sends n keyed records with a SyncProducer (one SendMessages call) and returns
// them with the partition/offset of each acknowledgement.
func saramaProduce(bootstrap string, cfg *sarama.Config, topic, prefix string, n int) ledger {
	p, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	check(err, "NewSyncProducer")
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("key-%03d", i%97)), Value: sarama.StringEncoder(payload(prefix))}
	}
	if err := p.SendMessages(msgs); err != nil {
		var pe sarama.ProducerErrors
		if errors.As(err, &pe) && len(pe) > 0 {
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
	l.sortByOffset()
	return l
}

// saramaHandler collects every message of its claims; marks the ones `mark` selects.
type saramaHandler struct {
	mu     sync.Mutex
	got    []rec
	want   int
	mark   func(p int32, off int64) bool
	done   chan struct{}
	once   sync.Once
	onFull func()
}

func (h *saramaHandler) Setup(sarama.ConsumerGroupSession) error { return nil }

// Cleanup runs before the session's final offset commit; with auto-commit off, commit here.
func (h *saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	return nil
}

func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
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

// saramaGroupRun joins the group, consumes until want messages arrived (+ linger), marks per
// `mark`, commits, calls during() while still a member, and leaves.
func saramaGroupRun(bootstrap string, cfg *sarama.Config, group, topic string, want int, mark func(int32, int64) bool, during func()) []rec {
	cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, cfg)
	check(err, "NewConsumerGroup")
	h := &saramaHandler{want: want, mark: mark, done: make(chan struct{})}
	if want == 0 {
		close(h.done)
	}
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
		cg.Close()
		cancel()
		failf("ConsumerGroup.Consume: %v", err)
	case <-time.After(60 * time.Second):
	}
	time.Sleep(1500 * time.Millisecond) // anything more would be re-delivery
	var duringPanic any
	if during != nil {
		func() {
			defer func() { duringPanic = recover() }()
			during()
		}()
	}
	cancel()
	if err := <-exited; err != nil {
		cg.Close()
		failf("ConsumerGroup.Consume: %v", err)
	}
	check(cg.Close(), "ConsumerGroup.Close")
	if duringPanic != nil {
		panic(duringPanic)
	}
	emu.Lock()
	defer emu.Unlock()
	if len(errs) > 0 {
		failf("consumer group errors: %v", errs)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got
}

func runSarama(bootstrap string, versions []string) {
	if len(versions) == 0 {
		versions = []string{"3.6.0", "2.1.0", "0.11.0.0"}
	}
	for _, vs := range versions {
		v, err := sarama.ParseKafkaVersion(vs)
		if err != nil { // sarama spells pre-1.0 versions with four numbers: 0.11.0.0
			v, err = sarama.ParseKafkaVersion(vs + ".0")
		}
		if err != nil {
			fmt.Printf("FAIL sarama %s: bad version: %v\n", vs, err)
			failed = append(failed, "sarama "+vs)
			continue
		}
		saramaVersion(bootstrap, v)
	}
}

func saramaVersion(bootstrap string, v sarama.KafkaVersion) {
	client := "sarama(V" + strings.ReplaceAll(v.String(), ".", "_") + ")"
	tag := "v" + strings.ReplaceAll(v.String(), ".", "")
	topic := name("topic", "sarama", tag)
	group := name("group", "sarama", tag)
	cfg := saramaConfig(v)
	var admin sarama.ClusterAdmin
	var all ledger

	created := step(client, "admin-create-list-describe-topic", nil, func() {
		var err error
		admin, err = sarama.NewClusterAdmin([]string{bootstrap}, cfg)
		check(err, "NewClusterAdmin")
		check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false), "CreateTopic")
		tds, err := admin.ListTopics()
		check(err, "ListTopics")
		td, found := tds[topic]
		if !found || td.NumPartitions != 3 {
			failf("ListTopics: %s found=%v partitions=%d, expected 3", topic, found, td.NumPartitions)
		}
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		check(err, "DescribeConfig")
		have := false
		for _, e := range entries {
			have = have || e.Name == "retention.ms"
		}
		if !have {
			failf("DescribeConfig of %s has no retention.ms (%d entries)", topic, len(entries))
		}
	})
	if admin != nil {
		defer admin.Close()
	}

	produced := step(client, "sync-producer-codecs-keyed", []bool{created}, func() {
		all = ledger{}
		for _, c := range saramaCodecs {
			if !v.IsAtLeast(c.min) {
				continue
			}
			pc := saramaConfig(v)
			pc.Producer.Compression = c.codec
			all = all.merge(saramaProduce(bootstrap, pc, topic, "sarama-"+c.name, 200))
		}
		checkProducedOrder(all, seqOf)
		checkKeyPartitions(all, 3)
		for p, rs := range all {
			for i, r := range rs {
				if r.Offset != int64(i) {
					failf("partition %d: record #%d acknowledged at offset %d: a fresh partition's offsets are 0,1,2,...", p, i, r.Offset)
				}
			}
		}
	})

	grouped := step(client, "consumer-group-mark-commit-restart", []bool{produced}, func() {
		mid := midpoints(all)
		got := saramaGroupRun(bootstrap, cfg, group, topic, all.count(),
			func(p int32, off int64) bool { return off < mid[p] },
			func() {
				gds, err := admin.DescribeConsumerGroups([]string{group})
				check(err, "DescribeConsumerGroups")
				if len(gds) != 1 || gds[0].Err != sarama.ErrNoError || gds[0].State != "Stable" || len(gds[0].Members) != 1 || gds[0].ProtocolType != "consumer" {
					d := "none"
					if len(gds) > 0 {
						d = fmt.Sprintf("err=%v state=%q members=%d protocolType=%q", gds[0].Err, gds[0].State, len(gds[0].Members), gds[0].ProtocolType)
					}
					failf("DescribeConsumerGroups while consuming: %s; expected Stable, 1 member, consumer", d)
				}
			})
		sameRecords("first group member", all, got)
		saramaCheckCommitted(admin, group, topic, mid)

		more := saramaProduce(bootstrap, saramaConfig(v), topic, "sarama-more", 150)
		want := all.from(mid).merge(more)
		got = saramaGroupRun(bootstrap, cfg, group, topic, want.count(), func(int32, int64) bool { return true }, nil)
		sameRecords("restarted group member (must resume at the committed offsets)", want, got)
		all = all.merge(more)
		saramaCheckCommitted(admin, group, topic, offsetsOf(all))
	})

	step(client, "admin-delete-records", []bool{grouped}, func() {
		check(admin.DeleteRecords(topic, map[int32]int64{0: 5}), "DeleteRecords")
		cl, err := sarama.NewClient([]string{bootstrap}, cfg)
		check(err, "NewClient")
		defer cl.Close()
		start, err := cl.GetOffset(topic, 0, sarama.OffsetOldest)
		check(err, "ListOffsets earliest")
		if start != 5 {
			failf("earliest offset of partition 0 after DeleteRecords(5): %d", start)
		}
		end, err := cl.GetOffset(topic, 0, sarama.OffsetNewest)
		check(err, "ListOffsets latest")
		if end != offsetsOf(all)[0] {
			failf("latest offset of partition 0: %d, expected %d", end, offsetsOf(all)[0])
		}
	})

	deleted := step(client, "admin-delete-topic", []bool{created}, func() {
		check(admin.DeleteTopic(topic), "DeleteTopic")
		for i := 0; i < 50; i++ {
			tds, err := admin.ListTopics()
			check(err, "ListTopics")
			if _, present := tds[topic]; !present {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		failf("%s still listed 10s after DeleteTopic", topic)
	})

	// As Kafka: a deleted topic takes the groups' committed offsets with it, so a topic made
	// again under its name does not inherit offsets past its end (sarama's
	// TestFuncTxnProduceAndCommitOffset recreates its topic on every run).
	step(client, "admin-delete-topic-drops-its-committed-offsets", []bool{grouped, deleted}, func() {
		check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false), "CreateTopic again")
		saramaCheckCommitted(admin, group, topic, map[int32]int64{0: -1, 1: -1, 2: -1})
		check(admin.DeleteTopic(topic), "DeleteTopic")
	})

	if !v.IsAtLeast(sarama.V2_7_0_0) {
		return
	}
	// sarama's TestFuncAdminUpdateFeatures and TestFuncAdminIncrementalAlterConfigs.
	step(client, "admin-update-features", nil, func() {
		_, err := admin.UpdateFeatures([]sarama.FeatureUpdate{{Feature: "no.such.feature", MaxVersionLevel: 1}})
		if !errors.Is(err, sarama.ErrInvalidUpdateVersion) {
			failf("UpdateFeatures of an unknown feature: %v, expected INVALID_UPDATE_VERSION", err)
		}
	})
	step(client, "admin-broker-cleaner-backoff", nil, func() {
		res := sarama.ConfigResource{Type: sarama.BrokerResource, Name: "1", ConfigNames: []string{"log.cleaner.backoff.ms"}}
		entries, err := admin.DescribeConfig(res)
		check(err, "DescribeConfig")
		if len(entries) != 1 || entries[0].ReadOnly {
			failf("DescribeConfig of broker 1's log.cleaner.backoff.ms: %+v, expected one entry, not read-only", entries)
		}
		value := "16000"
		check(admin.IncrementalAlterConfig(sarama.BrokerResource, "1", map[string]sarama.IncrementalAlterConfigsEntry{
			"log.cleaner.backoff.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &value},
		}, false), "IncrementalAlterConfig log.cleaner.backoff.ms")
		entries, err = admin.DescribeConfig(res)
		check(err, "DescribeConfig")
		if len(entries) != 1 || entries[0].Value != value {
			failf("log.cleaner.backoff.ms after the change: %+v, expected %s", entries, value)
		}
		check(admin.IncrementalAlterConfig(sarama.BrokerResource, "1", map[string]sarama.IncrementalAlterConfigsEntry{
			"log.cleaner.backoff.ms": {Operation: sarama.IncrementalAlterConfigsOperationDelete},
		}, false), "IncrementalAlterConfig delete")
	})
}

func saramaCheckCommitted(admin sarama.ClusterAdmin, group, topic string, want map[int32]int64) {
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	check(err, "ListConsumerGroupOffsets")
	if resp.Err != sarama.ErrNoError {
		failf("ListConsumerGroupOffsets: %v", resp.Err)
	}
	for p, w := range want {
		b := resp.GetBlock(topic, p)
		if b == nil {
			failf("ListConsumerGroupOffsets: nothing for %s[%d]", topic, p)
		}
		if b.Err != sarama.ErrNoError || b.Offset != w {
			failf("ListConsumerGroupOffsets %s[%d]: offset %d err %v, expected %d", topic, p, b.Offset, b.Err, w)
		}
	}
}

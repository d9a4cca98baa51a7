package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

var kafkagoCodecs = []struct {
	name  string
	codec compress.Compression
}{
	{"none", 0},
	{"gzip", kafka.Gzip},
	{"snappy", kafka.Snappy},
	{"lz4", kafka.Lz4},
	{"zstd", kafka.Zstd},
}

// kafkagoProduce writes n keyed messages with a kafka.Writer using Murmur2Balancer. kafka-go does
// not report offsets, so the expected placement is computed: Kafka's murmur2 partition, offsets
// continuing from next[p] in produce order (the topic has no other writer).
func kafkagoProduce(bootstrap, topic, prefix string, codec compress.Compression, n int, next map[int32]int64) ledger {
	w := &kafka.Writer{
		Addr: kafka.TCP(bootstrap), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, Compression: codec, BatchSize: n, BatchTimeout: 10 * time.Millisecond,
		MaxAttempts: 1, // a retry could duplicate; a failure must show
	}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	l := ledger{}
	for i := range msgs {
		key := fmt.Sprintf("key-%03d", i%97)
		msgs[i] = kafka.Message{Key: []byte(key), Value: []byte(payload(prefix))}
		p := kafkaPartition([]byte(key), 3)
		l.add(rec{key, string(msgs[i].Value), p, next[p]})
		next[p]++
	}
	ctx, cancel := timeout(60 * time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		var we kafka.WriteErrors
		if errors.As(err, &we) {
			for _, e := range we {
				if e != nil {
					failf("Writer.WriteMessages (%s): %d of %d failed, first: %v", prefix, we.Count(), n, e)
				}
			}
		}
		failf("Writer.WriteMessages (%s): %v", prefix, err)
	}
	return l
}

// kafkagoGroupRead reads with a group Reader until want messages (+ linger), commits the message
// before commitAt[p] on every partition (synchronous commits), and closes the reader.
func kafkagoGroupRead(bootstrap, group, topic string, want int, commitAt map[int32]int64) []rec {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{bootstrap}, GroupID: group, Topic: topic,
		StartOffset: kafka.FirstOffset, MaxWait: 500 * time.Millisecond, CommitInterval: 0,
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
	})
	var got []rec
	toCommit := []kafka.Message{}
	fetch := func(until time.Time) bool {
		ctx, cancel := context.WithDeadline(context.Background(), until)
		defer cancel()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return false
			}
			r.Close()
			failf("Reader.FetchMessage: %v", err)
		}
		got = append(got, rec{string(m.Key), string(m.Value), int32(m.Partition), m.Offset})
		if c, found := commitAt[int32(m.Partition)]; found && m.Offset == c-1 {
			toCommit = append(toCommit, m)
		}
		return true
	}
	end := time.Now().Add(60 * time.Second)
	for len(got) < want && fetch(end) {
	}
	end = time.Now().Add(1500 * time.Millisecond)
	for fetch(end) {
	}
	if len(toCommit) > 0 {
		ctx, cancel := timeout(30 * time.Second)
		err := r.CommitMessages(ctx, toCommit...)
		cancel()
		if err != nil {
			r.Close()
			failf("Reader.CommitMessages: %v", err)
		}
	}
	check(r.Close(), "Reader.Close")
	return got
}

func runKafkaGo(bootstrap string) {
	const client = "kafka-go"
	topic := name("topic", "kafkago", "main")
	group := name("group", "kafkago", "main")
	kc := &kafka.Client{Addr: kafka.TCP(bootstrap), Timeout: 30 * time.Second}
	var all ledger
	next := map[int32]int64{}

	created := step(client, "client-create-topics-metadata", nil, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		resp, err := kc.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}}})
		check(err, "CreateTopics")
		check(resp.Errors[topic], "CreateTopics "+topic)
		md, err := kc.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		check(err, "Metadata")
		if len(md.Topics) != 1 || md.Topics[0].Name != topic {
			failf("Metadata: %d topics answered for %s", len(md.Topics), topic)
		}
		check(md.Topics[0].Error, "Metadata "+topic)
		if n := len(md.Topics[0].Partitions); n != 3 {
			failf("Metadata: %s has %d partitions, expected 3", topic, n)
		}
		if len(md.Brokers) == 0 {
			failf("Metadata: no brokers")
		}
	})

	// What kafka-go's own test suite found (TestClientAlterPartitionReassignments,
	// TestClientListPartitionReassignments, TestConnCreateTopics, TestAlterUserScramCredentials,
	// TestConn/test_join_group_with_an_invalid_groupID): each answered as Kafka answers it.
	step(client, "client-partition-reassignments", []bool{created}, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		md, err := kc.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		check(err, "Metadata")
		node := md.Brokers[0].ID
		resp, err := kc.AlterPartitionReassignments(ctx, &kafka.AlterPartitionReassignmentsRequest{
			Topic: topic,
			Assignments: []kafka.AlterPartitionReassignmentsRequestAssignment{
				{PartitionID: 0, BrokerIDs: []int{node}}, {PartitionID: 1, BrokerIDs: []int{node}},
			},
		})
		check(err, "AlterPartitionReassignments")
		check(resp.Error, "AlterPartitionReassignments")
		if len(resp.PartitionResults) != 2 {
			failf("AlterPartitionReassignments: %d partition results, expected 2", len(resp.PartitionResults))
		}
		for _, r := range resp.PartitionResults {
			check(r.Error, fmt.Sprintf("AlterPartitionReassignments %s[%d] to its own broker", r.Topic, r.PartitionID))
		}
		resp, err = kc.AlterPartitionReassignments(ctx, &kafka.AlterPartitionReassignmentsRequest{
			Topic:       topic,
			Assignments: []kafka.AlterPartitionReassignmentsRequestAssignment{{PartitionID: 0, BrokerIDs: []int{node + 7}}},
		})
		check(err, "AlterPartitionReassignments")
		if len(resp.PartitionResults) != 1 || !errors.Is(resp.PartitionResults[0].Error, kafka.InvalidReplicaAssignment) {
			failf("AlterPartitionReassignments to a broker that does not exist: %+v, expected INVALID_REPLICA_ASSIGNMENT", resp.PartitionResults)
		}
		list, err := kc.ListPartitionReassignments(ctx, &kafka.ListPartitionReassignmentsRequest{})
		check(err, "ListPartitionReassignments")
		check(list.Error, "ListPartitionReassignments")
		if len(list.Topics) != 0 {
			failf("ListPartitionReassignments: %d topics reassigning on one broker", len(list.Topics))
		}
	})

	step(client, "client-create-topics-duplicate-name", nil, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		dup := name("topic", "kafkago", "dup")
		resp, err := kc.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
			{Topic: dup, NumPartitions: 1, ReplicationFactor: 1}, {Topic: dup, NumPartitions: 2, ReplicationFactor: 1},
		}})
		check(err, "CreateTopics")
		if !errors.Is(resp.Errors[dup], kafka.InvalidRequest) {
			failf("CreateTopics naming %s twice: %v, expected INVALID_REQUEST", dup, resp.Errors[dup])
		}
		md, err := kc.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{dup}})
		check(err, "Metadata")
		if len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 {
			failf("CreateTopics naming %s twice created it (%d partitions)", dup, len(md.Topics[0].Partitions))
		}
	})

	step(client, "client-scram-credentials-any-salted-password", nil, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		user := name("user", "kafkago", "scram")
		// As kafka-go's own test: a SHA-512 credential whose salted password is not 64 bytes.
		// Kafka stores what the client computed; only the iterations are bounded.
		resp, err := kc.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
			Upsertions: []kafka.UserScramCredentialsUpsertion{{
				Name: user, Mechanism: kafka.ScramMechanismSha512, Iterations: 15000,
				Salt: []byte("my-salt"), SaltedPassword: []byte("my-salted-password"),
			}},
		})
		check(err, "AlterUserScramCredentials")
		if len(resp.Results) != 1 {
			failf("AlterUserScramCredentials: %d results", len(resp.Results))
		}
		check(resp.Results[0].Error, "AlterUserScramCredentials upsert")
		desc, err := kc.DescribeUserScramCredentials(ctx, &kafka.DescribeUserScramCredentialsRequest{
			Users: []kafka.UserScramCredentialsUser{{Name: user}},
		})
		check(err, "DescribeUserScramCredentials")
		check(desc.Error, "DescribeUserScramCredentials")
		if len(desc.Results) != 1 || len(desc.Results[0].CredentialInfos) != 1 ||
			desc.Results[0].CredentialInfos[0].Mechanism != kafka.ScramMechanismSha512 ||
			desc.Results[0].CredentialInfos[0].Iterations != 15000 {
			failf("DescribeUserScramCredentials: %+v, expected one SHA-512 credential of 15000 iterations", desc.Results)
		}
		resp, err = kc.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
			Deletions: []kafka.UserScramCredentialsDeletion{{Name: user, Mechanism: kafka.ScramMechanismSha512}},
		})
		check(err, "AlterUserScramCredentials")
		check(resp.Results[0].Error, "AlterUserScramCredentials delete")
	})

	step(client, "client-join-group-empty-id", nil, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		resp, err := kc.JoinGroup(ctx, &kafka.JoinGroupRequest{
			GroupID: "", SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
			ProtocolType: "consumer",
			Protocols:    []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{topic}}}},
		})
		check(err, "JoinGroup")
		if !errors.Is(resp.Error, kafka.InvalidGroupId) {
			failf("JoinGroup with an empty group id: %v, expected INVALID_GROUP_ID", resp.Error)
		}
	})

	produced := step(client, "writer-murmur2-codecs", []bool{created}, func() {
		all = ledger{}
		for _, c := range kafkagoCodecs {
			all = all.merge(kafkagoProduce(bootstrap, topic, "kafkago-"+c.name, c.codec, 200, next))
		}
	})

	listed := step(client, "client-list-offsets", []bool{produced}, func() {
		ctx, cancel := timeout(30 * time.Second)
		defer cancel()
		req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {}}}
		for p := 0; p < 3; p++ {
			req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
		}
		resp, err := kc.ListOffsets(ctx, req)
		check(err, "ListOffsets")
		pos := resp.Topics[topic]
		if len(pos) != 3 {
			failf("ListOffsets: %d partitions answered, expected 3", len(pos))
		}
		for _, po := range pos {
			check(po.Error, fmt.Sprintf("ListOffsets %s[%d]", topic, po.Partition))
			if po.FirstOffset != 0 || po.LastOffset != next[int32(po.Partition)] {
				failf("ListOffsets %s[%d]: first %d last %d, expected 0 and %d", topic, po.Partition, po.FirstOffset, po.LastOffset, next[int32(po.Partition)])
			}
		}
	})

	step(client, "reader-group-commit-restart", []bool{produced, listed}, func() {
		mid := midpoints(all)
		got := kafkagoGroupRead(bootstrap, group, topic, all.count(), mid)
		sameRecords("first group reader (placement = Kafka murmur2, order, payload)", all, got)
		kafkagoCheckCommitted(kc, group, topic, mid)

		more := kafkagoProduce(bootstrap, topic, "kafkago-more", 0, 150, next)
		want := all.from(mid).merge(more)
		got = kafkagoGroupRead(bootstrap, group, topic, want.count(), offsetsOf(all.merge(more)))
		sameRecords("restarted group reader (must resume at the committed offsets)", want, got)
		kafkagoCheckCommitted(kc, group, topic, offsetsOf(all.merge(more)))
	})
}

func kafkagoCheckCommitted(kc *kafka.Client, group, topic string, want map[int32]int64) {
	ctx, cancel := timeout(30 * time.Second)
	defer cancel()
	resp, err := kc.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2}}})
	check(err, "OffsetFetch")
	check(resp.Error, "OffsetFetch")
	seen := 0
	for _, p := range resp.Topics[topic] {
		check(p.Error, fmt.Sprintf("OffsetFetch %s[%d]", topic, p.Partition))
		if w, found := want[int32(p.Partition)]; found {
			seen++
			if p.CommittedOffset != w {
				failf("OffsetFetch %s[%d]: committed %d, expected %d", topic, p.Partition, p.CommittedOffset, w)
			}
		}
	}
	if seen != len(want) {
		failf("OffsetFetch: %d of %d partitions answered", seen, len(want))
	}
}

package main

import (
	"fmt"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// checkPartitionersAgree: franz-go's Kafka-compatible key partitioner, Sarama's
// NewMurmur2Partitioner and kafka-go's Murmur2Balancer all pick the partition Kafka's Java
// client would (murmur2 above, checked against Kafka's own test vectors). No broker involved.
func checkPartitionersAgree() {
	for _, n := range []int{1, 3, 7, 16} {
		franz := kgo.StickyKeyPartitioner(nil).ForTopic("t")
		sar := sarama.NewMurmur2Partitioner("t")
		kg := kafka.Murmur2Balancer{Consistent: true}
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := 0; i < 2000; i++ {
			key := fmt.Sprintf("key-%d-%x", i, i*7919)
			want := kafkaPartition([]byte(key), n)
			if got := franz.Partition(&kgo.Record{Key: []byte(key)}, n); int32(got) != want {
				failf("franz StickyKeyPartitioner: key %q n=%d -> %d, Kafka murmur2 -> %d", key, n, got, want)
			}
			got, err := sar.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			check(err, "sarama murmur2 partitioner")
			if got != want {
				failf("sarama NewMurmur2Partitioner: key %q n=%d -> %d, Kafka murmur2 -> %d", key, n, got, want)
			}
			if got := kg.Balance(kafka.Message{Key: []byte(key)}, parts...); int32(got) != want {
				failf("kafka-go Murmur2Balancer: key %q n=%d -> %d, Kafka murmur2 -> %d", key, n, got, want)
			}
		}
	}
}

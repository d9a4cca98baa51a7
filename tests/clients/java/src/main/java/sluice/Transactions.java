package sluice;

import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.*;

/**
 * The Java client's transactional producer against sluice (tests/transactions.rs):
 * commit, abort, commit of 10 records each (read_committed sees the 20 committed, read_uncommitted
 * all 30); a second instance with the same transactional.id fences the first; and a
 * consume-transform-produce loop with sendOffsetsToTransaction(ConsumerGroupMetadata) (KIP-447)
 * whose output holds each of 500 inputs exactly once. Exits non-zero with a message on failure.
 */
public class Transactions {
    static String bootstrap;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static Properties producerProps(String txnId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("transactional.id", txnId);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        return p;
    }

    static List<String> readAll(String topic, int partitions, String isolation, int expect) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("isolation.level", isolation);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 15000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) out.add(r.value());
                if (out.size() >= expect) {
                    // Anything beyond what is expected would be a bug: look a little longer.
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) out.add(r.value());
                    break;
                }
            }
        }
        return out;
    }

    static void createTopics(String... names) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            List<NewTopic> ts = new ArrayList<>();
            for (String n : names) ts.add(new NewTopic(n, 2, (short) 1));
            admin.createTopics(ts).all().get();
        }
    }

    static void commitAbortCommit(String topic) throws Exception {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(producerProps("java-" + topic))) {
            p.initTransactions();
            for (int round = 0; round < 3; round++) {
                p.beginTransaction();
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(topic, i % 2, "k", "r" + round + "-" + i));
                p.flush();
                if (round == 1) p.abortTransaction(); else p.commitTransaction();
            }
        }
        List<String> committed = readAll(topic, 2, "read_committed", 20);
        check(committed.size() == 20, "read_committed got " + committed.size() + " records, expected 20: " + committed);
        check(committed.stream().noneMatch(v -> v.startsWith("r1-")), "aborted records visible: " + committed);
        List<String> all = readAll(topic, 2, "read_uncommitted", 30);
        check(all.size() == 30, "read_uncommitted got " + all.size() + ", expected 30");
        System.out.println("commit/abort/commit: read_committed 20 of 30");
    }

    static void fencing(String topic) throws Exception {
        String id = "java-fence-" + topic;
        KafkaProducer<String, String> old = new KafkaProducer<>(producerProps(id));
        old.initTransactions();
        old.beginTransaction();
        old.send(new ProducerRecord<>(topic, 0, "k", "zombie")).get();
        try (KafkaProducer<String, String> fresh = new KafkaProducer<>(producerProps(id))) {
            fresh.initTransactions();
            try {
                old.commitTransaction();
                throw new AssertionError("the fenced producer committed");
            } catch (ProducerFencedException e) {
                System.out.println("old instance fenced: " + e.getMessage());
            } catch (org.apache.kafka.common.KafkaException e) {
                check(e.getCause() instanceof ProducerFencedException
                        || String.valueOf(e.getMessage()).toLowerCase().contains("fenced")
                        || String.valueOf(e.getMessage()).toLowerCase().contains("epoch"),
                        "unexpected error for the fenced producer: " + e);
                System.out.println("old instance fenced: " + e);
            }
            old.close(Duration.ZERO);
            fresh.beginTransaction();
            fresh.send(new ProducerRecord<>(topic, 0, "k", "live"));
            fresh.commitTransaction();
        }
        List<String> got = readAll(topic, 2, "read_committed", 1);
        check(got.equals(List.of("live")), "read_committed after fencing: " + got);
        System.out.println("fencing: the zombie's transaction was aborted");
    }

    static void consumeTransformProduce(String in, String out) throws Exception {
        int n = 500;
        Properties plain = new Properties();
        plain.put("bootstrap.servers", bootstrap);
        plain.put("key.serializer", StringSerializer.class.getName());
        plain.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> feeder = new KafkaProducer<>(plain)) {
            for (int i = 0; i < n; i++) feeder.send(new ProducerRecord<>(in, i % 2, "k", "v" + i));
        }
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("group.id", "java-ctp-" + in);
        c.put("max.poll.records", "40");
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        c.put("isolation.level", "read_committed");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        int done = 0, txns = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c);
             KafkaProducer<String, String> p = new KafkaProducer<>(producerProps("java-ctp-" + in))) {
            p.initTransactions();
            consumer.subscribe(List.of(in));
            long deadline = System.currentTimeMillis() + 40000;
            while (done < n && System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> recs = consumer.poll(Duration.ofMillis(500));
                if (recs.isEmpty()) continue;
                p.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> r : recs) {
                    p.send(new ProducerRecord<>(out, r.partition(), r.key(), r.value().toUpperCase()));
                    offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                p.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                p.commitTransaction();
                done += recs.count();
                txns++;
            }
        }
        check(done == n, "processed " + done + " of " + n);
        List<String> got = readAll(out, 2, "read_committed", n);
        Set<String> distinct = new HashSet<>(got);
        check(got.size() == n && distinct.size() == n, "output: " + got.size() + " records, " + distinct.size() + " distinct, expected " + n);
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets("java-ctp-" + in).partitionsToOffsetAndMetadata().get();
            long sum = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            check(sum == n, "committed offsets sum to " + sum + ", expected " + n);
        }
        System.out.println("consume-transform-produce: " + n + " inputs exactly once in " + txns + " transactions");
    }

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        String suffix = Long.toString(System.nanoTime() % 1_000_000_000L);
        createTopics("jt-" + suffix, "jf-" + suffix, "jin-" + suffix, "jout-" + suffix);
        commitAbortCommit("jt-" + suffix);
        fencing("jf-" + suffix);
        consumeTransformProduce("jin-" + suffix, "jout-" + suffix);
        System.out.println("OK Transactions");
    }
}

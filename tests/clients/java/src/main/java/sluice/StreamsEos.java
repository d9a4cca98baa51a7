package sluice;

import java.nio.file.Files;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.*;
import org.apache.kafka.streams.*;
import org.apache.kafka.streams.kstream.*;

/**
 * A Kafka Streams application with processing.guarantee=exactly_once_v2 and a state store
 * against sluice (tests/transactions.rs): it counts 1,200 records over 12 keys. Its output, read
 * with read_committed, must end at exactly 100 per key with every count seen once and in
 * order (a duplicate or lost increment shows as a repeated or skipped count), and its state
 * store's changelog topic must exist with cleanup.policy=compact. Then the application is
 * closed and started again from its changelog (a fresh state directory), fed 12 more records,
 * and must continue at 101 per key.
 */
public class StreamsEos {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static KafkaStreams start(String bootstrap, String app, String in, String out) throws Exception {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("streams").toString());
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
        StreamsBuilder b = new StreamsBuilder();
        b.<String, String>stream(in)
            .groupByKey()
            .count(Materialized.as("counts"))
            .toStream()
            .to(out, Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams s = new KafkaStreams(b.build(), p);
        s.start();
        long deadline = System.currentTimeMillis() + 30000;
        while (s.state() != KafkaStreams.State.RUNNING) {
            check(System.currentTimeMillis() < deadline, "streams did not reach RUNNING: " + s.state());
            check(s.state() != KafkaStreams.State.ERROR, "streams failed");
            Thread.sleep(100);
        }
        return s;
    }

    static void feed(String bootstrap, String in, int perKey) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            for (int i = 0; i < perKey; i++)
                for (int k = 0; k < 12; k++) prod.send(new ProducerRecord<>(in, "k" + k, "x"));
        }
    }

    /** Reads `out` with read_committed until every key reached `target`: key -> counts seen. */
    static Map<String, List<Long>> readCounts(String bootstrap, String out, long target) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("isolation.level", "read_committed");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", LongDeserializer.class.getName());
        Map<String, List<Long>> seen = new TreeMap<>();
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = List.of(new TopicPartition(out, 0), new TopicPartition(out, 1));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 60000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200)))
                    seen.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                if (seen.size() == 12 && seen.values().stream().allMatch(v -> v.get(v.size() - 1) >= target)) break;
            }
        }
        return seen;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String s = Long.toString(System.nanoTime() % 1_000_000_000L);
        String in = "words-" + s, out = "counts-" + s, app = "wc-" + s;
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic(in, 2, (short) 1), new NewTopic(out, 2, (short) 1))).all().get();
        }
        KafkaStreams streams = start(bootstrap, app, in, out);
        feed(bootstrap, in, 100);
        Map<String, List<Long>> seen = readCounts(bootstrap, out, 100);
        check(seen.size() == 12, "keys counted: " + seen.keySet());
        for (Map.Entry<String, List<Long>> e : seen.entrySet()) {
            List<Long> want = new ArrayList<>();
            for (long i = 1; i <= 100; i++) want.add(i);
            check(e.getValue().equals(want), "counts of " + e.getKey() + ": " + e.getValue());
        }
        String changelog = app + "-counts-changelog";
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
            String policy = admin.describeConfigs(List.of(r)).all().get().get(r).get("cleanup.policy").value();
            check(policy.equals("compact"), "changelog " + changelog + " cleanup.policy=" + policy);
        }
        streams.close(Duration.ofSeconds(20));
        System.out.println("first run: 12 keys counted 1..100 exactly once");

        // A new instance with an empty state directory restores the store from the changelog.
        streams = start(bootstrap, app, in, out);
        feed(bootstrap, in, 1);
        seen = readCounts(bootstrap, out, 101);
        for (Map.Entry<String, List<Long>> e : seen.entrySet()) {
            List<Long> v = e.getValue();
            check(v.size() == 101 && v.get(100) == 101L, "after restore, counts of " + e.getKey() + " end " + v.subList(Math.max(0, v.size() - 3), v.size()));
        }
        streams.close(Duration.ofSeconds(20));
        System.out.println("OK StreamsEos: exactly-once counts, restored from the changelog");
    }
}

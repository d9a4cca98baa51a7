package sluice;

import java.io.FileWriter;
import java.io.IOException;
import java.io.Writer;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.connect.cli.ConnectDistributed;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.sink.SinkConnector;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.apache.kafka.connect.source.ExactlyOnceSupport;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/**
 * Kafka Connect 4.4 in distributed mode on sluice (tests/transactions.rs): its config, offset
 * and status topics (compacted, checked by the worker), its group protocol, and exactly-once
 * source support (KIP-618: a transactional producer per source task, zombies fenced with
 * Admin.fenceProducers, the offsets topic read read_committed). A source counts 0..count-1
 * into a topic and a sink appends what it reads to a file.
 *
 *   ConnectEos worker BOOTSTRAP PORT      runs a worker (until killed)
 *   ConnectEos start BOOTSTRAP PORT COUNT FILE
 *                                         creates the connectors, waits until some output is
 *                                         committed
 *   ConnectEos verify BOOTSTRAP PORT COUNT FILE
 *                                         waits for the whole count: read_committed sees each
 *                                         number exactly once, the sink's file each at least once
 *
 * Exits non-zero with a message on failure.
 */
public class ConnectEos {
    static final String TOPIC = "connect-numbers";

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[1];
        int port = Integer.parseInt(args[2]);
        switch (args[0]) {
            case "worker" -> worker(bootstrap, port);
            case "start" -> start(bootstrap, port, Integer.parseInt(args[3]), args[4]);
            case "verify" -> verify(bootstrap, port, Integer.parseInt(args[3]), args[4]);
            default -> throw new IllegalArgumentException(args[0]);
        }
    }

    static void worker(String bootstrap, int port) {
        Map<String, String> w = new HashMap<>();
        w.put("bootstrap.servers", bootstrap);
        w.put("group.id", "connect-eos");
        w.put("listeners", "http://127.0.0.1:" + port);
        w.put("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        w.put("value.converter", "org.apache.kafka.connect.storage.StringConverter");
        w.put("config.storage.topic", "connect-configs");
        w.put("offset.storage.topic", "connect-offsets");
        w.put("status.storage.topic", "connect-status");
        w.put("config.storage.replication.factor", "1");
        w.put("offset.storage.replication.factor", "1");
        w.put("status.storage.replication.factor", "1");
        w.put("exactly.once.source.support", "enabled");
        w.put("offset.flush.interval.ms", "500");
        // A killed worker's tasks move at once when its session ends (the default waits 5
        // minutes for it to come back), and its sink consumer's session is as short.
        w.put("scheduled.rebalance.max.delay.ms", "0");
        w.put("session.timeout.ms", "6000");
        w.put("heartbeat.interval.ms", "1000");
        w.put("consumer.session.timeout.ms", "6000");
        w.put("consumer.heartbeat.interval.ms", "1000");
        new ConnectDistributed().startConnect(w);
        System.out.println("worker started");
    }

    static HttpResponse<String> rest(int port, String method, String path, String body) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json");
        b = body == null ? b.method(method, HttpRequest.BodyPublishers.noBody())
                : b.method(method, HttpRequest.BodyPublishers.ofString(body));
        return HttpClient.newHttpClient().send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    /** PUT /connectors/NAME/config, retried while the worker is starting or rebalancing. */
    static void putConnector(int port, String name, String config) throws Exception {
        long deadline = System.currentTimeMillis() + 90_000;
        String last = "";
        while (System.currentTimeMillis() < deadline) {
            try {
                HttpResponse<String> r = rest(port, "PUT", "/connectors/" + name + "/config", config);
                if (r.statusCode() == 200 || r.statusCode() == 201) return;
                last = r.statusCode() + " " + r.body();
            } catch (IOException e) {
                last = e.toString();
            }
            Thread.sleep(500);
        }
        throw new AssertionError("creating connector " + name + ": " + last);
    }

    static void start(String bootstrap, int port, int count, String file) throws Exception {
        putConnector(port, "numbers", "{"
                + "\"connector.class\": \"" + CountingSource.class.getName() + "\","
                + "\"tasks.max\": \"1\","
                + "\"topic\": \"" + TOPIC + "\","
                + "\"count\": \"" + count + "\","
                + "\"exactly.once.support\": \"required\","
                + "\"transaction.boundary\": \"poll\"}");
        putConnector(port, "collect", "{"
                + "\"connector.class\": \"" + FileSink.class.getName() + "\","
                + "\"tasks.max\": \"1\","
                + "\"topics\": \"" + TOPIC + "\","
                + "\"file\": \"" + file + "\","
                + "\"consumer.override.isolation.level\": \"read_committed\"}");
        // Some output committed, not all: the worker is then killed mid-stream.
        int seen = 0;
        long deadline = System.currentTimeMillis() + 90_000;
        while (System.currentTimeMillis() < deadline && (seen = committed(bootstrap).size()) < count / 10) {
            Thread.sleep(200);
        }
        check(seen >= count / 10, "only " + seen + " numbers committed after 90 s");
        check(seen < count, "the source finished before the worker could be killed: " + seen);
        System.out.println("committed so far: " + seen + " of " + count);
    }

    /** Every value in the topic up to its last stable offset, read_committed. */
    static List<String> committed(String bootstrap) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("isolation.level", "read_committed");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            consumer.partitionsFor(TOPIC, Duration.ofSeconds(10))
                    .forEach(p -> tps.add(new TopicPartition(TOPIC, p.partition())));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 10_000;
            while (System.currentTimeMillis() < deadline) {
                boolean atEnd = true;
                for (TopicPartition tp : tps) atEnd &= consumer.position(tp) >= end.get(tp);
                if (atEnd) break;
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) out.add(r.value());
            }
        }
        return out;
    }

    static void verify(String bootstrap, int port, int count, String file) throws Exception {
        List<String> got = List.of();
        long deadline = System.currentTimeMillis() + 120_000;
        while (System.currentTimeMillis() < deadline) {
            got = committed(bootstrap);
            if (got.size() >= count) break;
            Thread.sleep(500);
        }
        Set<String> distinct = new HashSet<>(got);
        check(distinct.size() == count,
                "read_committed holds " + distinct.size() + " distinct numbers of " + count);
        check(got.size() == count, "read_committed holds " + got.size() + " records for " + count
                + " numbers: the source wrote some twice");
        for (int i = 0; i < count; i++) check(distinct.contains(Integer.toString(i)), "missing " + i);
        // The sink is at least once: each number in its file, duplicates allowed.
        Set<String> sunk = new HashSet<>();
        deadline = System.currentTimeMillis() + 60_000;
        while (System.currentTimeMillis() < deadline) {
            sunk = new HashSet<>(Files.readAllLines(Path.of(file)));
            if (sunk.size() >= count) break;
            Thread.sleep(500);
        }
        check(sunk.equals(distinct), "the sink's file holds " + sunk.size() + " distinct numbers of " + count);
        HttpResponse<String> status = rest(port, "GET", "/connectors/numbers/status", null);
        check(status.body().contains("\"RUNNING\""), "source status: " + status.body());
        System.out.println("exactly once: " + got.size() + " numbers; the sink saw each");
    }

    /** Counts 0..count-1, 50 per poll; its offset is the next number. */
    public static class CountingSource extends SourceConnector {
        Map<String, String> props;

        @Override public void start(Map<String, String> props) { this.props = props; }
        @Override public Class<? extends Task> taskClass() { return CountingTask.class; }
        @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
        @Override public void stop() {}
        @Override public ConfigDef config() {
            return new ConfigDef()
                    .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "output topic")
                    .define("count", ConfigDef.Type.INT, ConfigDef.Importance.HIGH, "numbers to write");
        }
        @Override public String version() { return "1"; }
        @Override public ExactlyOnceSupport exactlyOnceSupport(Map<String, String> props) {
            return ExactlyOnceSupport.SUPPORTED;
        }
    }

    public static class CountingTask extends SourceTask {
        static final Map<String, String> PARTITION = Map.of("source", "numbers");
        String topic;
        int count;
        long next;

        @Override public void start(Map<String, String> props) {
            topic = props.get("topic");
            count = Integer.parseInt(props.get("count"));
            Map<String, Object> at = context.offsetStorageReader().offset(PARTITION);
            next = at == null ? 0 : ((Number) at.get("next")).longValue();
        }

        @Override public List<SourceRecord> poll() throws InterruptedException {
            Thread.sleep(10);
            List<SourceRecord> out = new ArrayList<>();
            for (int i = 0; i < 50 && next < count; i++, next++) {
                out.add(new SourceRecord(PARTITION, Map.of("next", next + 1), topic, null,
                        Schema.STRING_SCHEMA, Long.toString(next)));
            }
            return out.isEmpty() ? null : out;
        }

        @Override public void stop() {}
        @Override public String version() { return "1"; }
    }

    /** Appends each record's value to a file, a line each. */
    public static class FileSink extends SinkConnector {
        Map<String, String> props;

        @Override public void start(Map<String, String> props) { this.props = props; }
        @Override public Class<? extends Task> taskClass() { return FileSinkTask.class; }
        @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
        @Override public void stop() {}
        @Override public ConfigDef config() {
            return new ConfigDef().define("file", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "output file");
        }
        @Override public String version() { return "1"; }
    }

    public static class FileSinkTask extends SinkTask {
        Writer out;

        @Override public void start(Map<String, String> props) {
            try {
                out = new FileWriter(props.get("file"), true);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }

        @Override public void put(Collection<SinkRecord> records) {
            try {
                for (SinkRecord r : records) out.write(r.value() + "\n");
                out.flush();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }

        @Override public void stop() {
            try {
                out.close();
            } catch (IOException ignored) {
            }
        }

        @Override public String version() { return "1"; }
    }
}

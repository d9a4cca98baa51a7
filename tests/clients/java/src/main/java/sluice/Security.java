package sluice;

import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.serialization.*;

/**
 * The Java client on secured listeners (tests/security.rs): SASL_SSL with SCRAM-SHA-512 and a
 * PEM trust store (KIP-651) for an idempotent producer and a consumer, the AdminClient
 * (describeUserScramCredentials) with SCRAM-SHA-256; SSL with a client certificate; and a wrong password that
 * fails with SaslAuthenticationException. Arguments: SASL_SSL address, SSL address, certs dir.
 * Exits non-zero with a message on failure.
 */
public class Security {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static Properties sasl(String bootstrap, String certs, String mechanism, String user, String password) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("security.protocol", "SASL_SSL");
        p.put("ssl.truststore.type", "PEM");
        p.put("ssl.truststore.location", certs + "/ca.pem");
        p.put("sasl.mechanism", mechanism);
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + user + "\" password=\"" + password + "\";");
        return p;
    }

    public static void main(String[] args) throws Exception {
        String saslSsl = args[0], mtls = args[1], certs = args[2];
        String topic = "java-sec-" + System.currentTimeMillis();
        Properties p = sasl(saslSsl, certs, "SCRAM-SHA-512", "alice", "alicepw");
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("enable.idempotence", "true");
        p.put("acks", "all");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < 100; i++) producer.send(new ProducerRecord<>(topic, "k" + i, "v" + i)).get();
        }
        Properties c = sasl(saslSsl, certs, "SCRAM-SHA-512", "alice", "alicepw");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.currentTimeMillis() + 30000;
            while (got.size() < 100 && System.currentTimeMillis() < deadline)
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) got.add(r.value());
        }
        check(got.size() == 100 && got.get(0).equals("v0") && got.get(99).equals("v99"), "consumed " + got.size() + " of 100");

        try (Admin admin = Admin.create(sasl(saslSsl, certs, "SCRAM-SHA-256", "admin", "adminpw"))) {
            Map<String, UserScramCredentialsDescription> users =
                    admin.describeUserScramCredentials().all().get();
            check(users.containsKey("alice") && users.containsKey("admin"), "described users: " + users.keySet());
            check(users.get("alice").credentialInfos().get(0).mechanism() == ScramMechanism.SCRAM_SHA_512,
                    "alice's mechanism: " + users.get("alice").credentialInfos());
        }

        Properties t = new Properties();
        t.put("bootstrap.servers", mtls);
        t.put("security.protocol", "SSL");
        t.put("ssl.truststore.type", "PEM");
        t.put("ssl.truststore.location", certs + "/ca.pem");
        t.put("ssl.keystore.type", "PEM");
        t.put("ssl.keystore.certificate.chain", new String(java.nio.file.Files.readAllBytes(java.nio.file.Path.of(certs, "client.pem"))));
        t.put("ssl.keystore.key", new String(java.nio.file.Files.readAllBytes(java.nio.file.Path.of(certs, "client.key"))));
        try (Admin admin = Admin.create(t)) {
            Set<String> names = admin.listTopics().names().get();
            check(names.contains(topic), "topics over SSL: " + names);
        }

        Properties bad = sasl(saslSsl, certs, "SCRAM-SHA-512", "alice", "wrong");
        bad.put("request.timeout.ms", "10000");
        bad.put("default.api.timeout.ms", "15000");
        try (Admin admin = Admin.create(bad)) {
            admin.listTopics().names().get();
            throw new AssertionError("a wrong password was let in");
        } catch (java.util.concurrent.ExecutionException e) {
            check(e.getCause() instanceof SaslAuthenticationException, "wrong password: " + e.getCause());
        }
        // OAUTHBEARER with the Java client's own unsecured token (the broker allows those):
        // the token's subject, admin, is the principal, a super user who may list users.
        Properties o = sasl(saslSsl, certs, "OAUTHBEARER", "", "");
        o.put("sasl.jaas.config", "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required"
                + " unsecuredLoginStringClaim_sub=\"admin\";");
        try (Admin admin = Admin.create(o)) {
            Map<String, UserScramCredentialsDescription> users =
                    admin.describeUserScramCredentials().all().get();
            check(users.containsKey("alice"), "users described with an OAUTHBEARER token: " + users.keySet());
        }
        System.out.println("OK Security: 100 records over SASL_SSL (SCRAM-SHA-512), admin describe, SSL client certificate, wrong password refused, OAUTHBEARER");
    }
}

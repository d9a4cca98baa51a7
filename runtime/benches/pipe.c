/*
 * pipe: the plain Kafka-client way of doing what a sluice pipeline does. Consumes topic IN
 * from the beginning and produces every record unchanged (key, value, headers dropped) to
 * topic OUT, until COUNT records are delivered. Baseline of runtime/benches/pipeline_bench.sh.
 *
 *   pipe -b HOST:PORT -i IN -o OUT -n COUNT [-c key=value]... [-p key=value]...
 *
 * -c sets a consumer property, -p a producer property (after the defaults below).
 *
 * Every partition of IN is assigned (no group membership, no commits), read from the
 * beginning. Keyed records go to the producer's partitioner; key-less ones to the partition
 * numbered like the one they came from, which is what a sluice pipeline does, so both keep
 * per-partition order the same way.
 *
 * One thread consumes and produces (librdkafka's own threads do the I/O), like the simplest
 * client program would. At the end it prints one line that the bench script parses:
 *
 *   pipe: C consumed, D delivered, F failed; first record after S ms; T ms from the first
 *   record to the last delivery: R records/s; W ms in all
 *
 * Build (pipeline_bench.sh does it):
 *   gcc -O2 -o pipe pipe.c -I librdkafka/src librdkafka/src/librdkafka.a -lm -ldl -lpthread -lrt
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rdkafka.h"

static volatile sig_atomic_t stop;
static int64_t delivered, failed;
static char last_error[512];

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void die(const char *what, const char *why) {
    fprintf(stderr, "pipe: %s: %s\n", what, why);
    exit(1);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        failed++;
        snprintf(last_error, sizeof last_error, "%s", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

static void set(rd_kafka_conf_t *conf, const char *kv) {
    char errstr[512], key[256];
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof key) die(kv, "expected key=value");
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    if (rd_kafka_conf_set(conf, key, eq + 1, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        die(kv, errstr);
}

#define MAX_PROPS 64

int main(int argc, char **argv) {
    const char *brokers = NULL, *in = NULL, *out = NULL;
    int64_t count = -1;
    const char *cprops[MAX_PROPS], *pprops[MAX_PROPS];
    int ncprops = 0, npprops = 0, opt;
    char errstr[512];

    while ((opt = getopt(argc, argv, "b:i:o:n:c:p:")) != -1) {
        switch (opt) {
        case 'b': brokers = optarg; break;
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'n': count = strtoll(optarg, NULL, 10); break;
        case 'c': if (ncprops < MAX_PROPS) cprops[ncprops++] = optarg; break;
        case 'p': if (npprops < MAX_PROPS) pprops[npprops++] = optarg; break;
        default: goto usage;
        }
    }
    if (!brokers || !in || !out || count <= 0) {
    usage:
        fprintf(stderr, "usage: %s -b HOST:PORT -i IN -o OUT -n COUNT [-c k=v]... [-p k=v]...\n",
                argv[0]);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int64_t t_start = now_us();

    /* The producer: acks=1, big batches, a deep local queue. */
    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    set(pconf, "acks=1");
    set(pconf, "linger.ms=5");
    set(pconf, "batch.size=1000000");
    set(pconf, "batch.num.messages=1000000");
    set(pconf, "queue.buffering.max.messages=2000000");
    set(pconf, "queue.buffering.max.kbytes=2097152");
    set(pconf, "enable.idempotence=false");
    for (int i = 0; i < npprops; i++) set(pconf, pprops[i]);
    if (rd_kafka_conf_set(pconf, "bootstrap.servers", brokers, errstr, sizeof errstr))
        die("bootstrap.servers", errstr);
    rd_kafka_conf_set_dr_msg_cb(pconf, dr_cb);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof errstr);
    if (!prod) die("producer", errstr);
    rd_kafka_topic_t *out_rkt = rd_kafka_topic_new(prod, out, NULL);
    if (!out_rkt) die(out, rd_kafka_err2str(rd_kafka_last_error()));

    /* The consumer. A group.id is set only because librdkafka's consumer wants one; the
     * partitions are assigned, so it never joins the group, and nothing is committed.
     * Tuned for throughput like rdkafka_performance -C: a deep pre-fetch queue (1M records;
     * the default, 100k, is ~1 MB fetches ahead only) and no pause between fetches when the
     * queue is over its thresholds (fetch.queue.backoff.ms, 1 s by default). With librdkafka's
     * defaults this program moves ~200k records/s on a 2-core box; with these, ~1.2M. */
    rd_kafka_conf_t *cconf = rd_kafka_conf_new();
    set(cconf, "group.id=sluice-bench-pipe");
    set(cconf, "enable.auto.commit=false");
    set(cconf, "enable.auto.offset.store=false");
    set(cconf, "enable.partition.eof=false");
    set(cconf, "queued.min.messages=1000000");
    set(cconf, "fetch.queue.backoff.ms=0");
    for (int i = 0; i < ncprops; i++) set(cconf, cprops[i]);
    if (rd_kafka_conf_set(cconf, "bootstrap.servers", brokers, errstr, sizeof errstr))
        die("bootstrap.servers", errstr);
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof errstr);
    if (!cons) die("consumer", errstr);
    rd_kafka_poll_set_consumer(cons);

    /* Every partition of IN, from the beginning. */
    rd_kafka_topic_t *in_rkt = rd_kafka_topic_new(cons, in, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(cons, 0, in_rkt, &md, 10000);
    if (err) die("metadata", rd_kafka_err2str(err));
    if (md->topic_cnt != 1 || md->topics[0].err)
        die(in, md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "no such topic");
    int nparts = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(assign, in, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(in_rkt);
    err = rd_kafka_assign(cons, assign);
    if (err) die("assign", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(assign);

    int64_t consumed = 0, t_first = 0;
    while (!stop && consumed < count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 100);
        if (!m) {
            rd_kafka_poll(prod, 0);
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "pipe: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!t_first) t_first = now_us();
        int32_t part = m->key ? RD_KAFKA_PARTITION_UA : m->partition;
        /* The queue is full: serve delivery reports until there is room. */
        while (rd_kafka_produce(out_rkt, part, RD_KAFKA_MSG_F_COPY, m->payload, m->len, m->key,
                                m->key_len, NULL) == -1) {
            rd_kafka_resp_err_t e = rd_kafka_last_error();
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce", rd_kafka_err2str(e));
            rd_kafka_poll(prod, 10);
        }
        rd_kafka_message_destroy(m);
        if ((++consumed & 1023) == 0) rd_kafka_poll(prod, 0);
    }
    /* Everything produced, now wait for the last delivery reports. */
    while (!stop && delivered + failed < consumed) rd_kafka_poll(prod, 50);
    int64_t t_end = now_us();

    double run_ms = t_first ? (t_end - t_first) / 1000.0 : 0;
    printf("pipe: %" PRId64 " consumed, %" PRId64 " delivered, %" PRId64
           " failed; first record after %.0f ms; %.0f ms from the first record to the last"
           " delivery: %.0f records/s; %.0f ms in all\n",
           consumed, delivered, failed, t_first ? (t_first - t_start) / 1000.0 : -1.0, run_ms,
           run_ms > 0 ? delivered * 1000.0 / run_ms : 0.0, (t_end - t_start) / 1000.0);
    if (failed) fprintf(stderr, "pipe: last delivery error: %s\n", last_error);
    fflush(stdout);

    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
    rd_kafka_topic_destroy(out_rkt);
    rd_kafka_flush(prod, 5000);
    rd_kafka_destroy(prod);
    return (delivered == count && !failed) ? 0 : 1;
}

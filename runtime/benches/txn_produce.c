/* Transactional produce throughput, for txn_bench.sh: N records of SIZE bytes, round-robin
 * over the topic's partitions, either with an idempotent producer (TXN = 0) or in
 * transactions of TXN records (begin, produce TXN records, commit). Prints one line:
 *   records=N seconds=S records_per_s=R mb_per_s=M transactions=T
 * Every delivery must succeed; any error ends the run with exit status 1.
 *
 *   txn_produce BOOTSTRAP TOPIC PARTITIONS N SIZE TXN
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "rdkafka.h"

static long delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (failed++ < 5) fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", k, v, err);
        exit(1);
    }
}

static void ok(rd_kafka_error_t *e, const char *what) {
    if (e) {
        fprintf(stderr, "%s: %s\n", what, rd_kafka_error_string(e));
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC PARTITIONS N SIZE TXN\n", argv[0]);
        return 2;
    }
    const char *topic = argv[2];
    int partitions = atoi(argv[3]);
    long n = atol(argv[4]);
    int size = atoi(argv[5]);
    long txn = atol(argv[6]);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[256];
    set(conf, "bootstrap.servers", argv[1]);
    set(conf, "enable.idempotence", "true");
    set(conf, "linger.ms", "5");
    set(conf, "batch.size", "1000000");
    set(conf, "queue.buffering.max.messages", "1000000");
    set(conf, "queue.buffering.max.kbytes", "2097151");
    if (txn > 0) {
        char id[64];
        snprintf(id, sizeof id, "txn-bench-%ld", (long)getpid());
        set(conf, "transactional.id", id);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (txn > 0) ok(rd_kafka_init_transactions(rk, 30000), "init_transactions");
    char *payload = malloc(size);
    memset(payload, 'x', size);
    long transactions = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (txn > 0 && i % txn == 0) ok(rd_kafka_begin_transaction(rk), "begin_transaction");
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)(i % partitions)),
                RD_KAFKA_V_VALUE(payload, (size_t)size), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 10);
                continue;
            }
            if (e) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                return 1;
            }
            break;
        }
        rd_kafka_poll(rk, 0);
        if (txn > 0 && (i + 1) % txn == 0) {
            ok(rd_kafka_commit_transaction(rk, 60000), "commit_transaction");
            transactions++;
        }
    }
    if (txn > 0 && n % txn != 0) {
        ok(rd_kafka_commit_transaction(rk, 60000), "commit_transaction");
        transactions++;
    }
    rd_kafka_flush(rk, 60000);
    double secs = now() - t0;
    if (failed || delivered != n) {
        fprintf(stderr, "%ld delivered, %ld failed of %ld\n", delivered, failed, n);
        return 1;
    }
    printf("records=%ld seconds=%.3f records_per_s=%.0f mb_per_s=%.1f transactions=%ld\n", n,
           secs, n / secs, n * (double)size / secs / 1e6, transactions);
    rd_kafka_destroy(rk);
    free(payload);
    return 0;
}

// A throughput client for tls_bench.sh (CLIENT=franz): franz-go produces N records of SIZE
// bytes to one topic (-mode produce), or reads N records back from its start (-mode consume),
// and prints the seconds that took, from the first record to the last. Go's
// crypto/tls encrypts whole requests at a time, so the client's TLS cost per byte is far below
// kcat's (librdkafka hands OpenSSL each slice of a request on its own), which leaves more of
// the shared cores to the broker being measured.
//
//	go run . -mode produce|consume -bootstrap HOST:PORT -topic T -n N -size SIZE [-ca CA.pem]
//
// Output, one line: the seconds.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "broker")
	topic := flag.String("topic", "", "topic (must exist)")
	n := flag.Int("n", 1_000_000, "records")
	size := flag.Int("size", 1024, "bytes per record value")
	ca := flag.String("ca", "", "CA certificate (PEM): use TLS")
	mode := flag.String("mode", "produce", "produce or consume")
	flag.Parse()
	if *topic == "" {
		fail("-topic is needed")
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(*bootstrap),
		kgo.ClientID("sluice-tls-bench"),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(1_000_000),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxBufferedRecords(200_000),
		kgo.FetchMaxBytes(50 << 20),
		kgo.FetchMaxPartitionBytes(50 << 20),
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail("read %s: %v", *ca, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("no certificate in %s", *ca)
		}
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool}))
	}

	switch *mode {
	case "produce":
		produce(opts, *topic, *n, *size)
	case "consume":
		consume(append(opts, kgo.ConsumeTopics(*topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), *n, *size)
	default:
		fail("-mode is produce or consume")
	}
}

func produce(opts []kgo.Opt, topic string, n, size int) {
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		fail("client: %v", err)
	}
	defer prod.Close()
	// Connected and the topic's metadata known before the clock starts.
	if err := prod.Ping(context.Background()); err != nil {
		fail("ping: %v", err)
	}
	value := make([]byte, size)
	for i := range value {
		value[i] = 'x'
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		prod.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		fail("produce: %v", firstErr)
	}
	fmt.Printf("%.3f\n", took.Seconds())
}

func consume(opts []kgo.Opt, n, size int) {
	cons, err := kgo.NewClient(opts...)
	if err != nil {
		fail("client: %v", err)
	}
	defer cons.Close()
	ctx := context.Background()
	start := time.Now()
	got := 0
	for got < n {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		fs := cons.PollFetches(fctx)
		cancel()
		if errs := fs.Errors(); len(errs) > 0 {
			fail("fetch: %v", errs[0].Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Value) != size {
				fail("record at %d has %d bytes, not %d", r.Offset, len(r.Value), size)
			}
			got++
		})
	}
	took := time.Since(start)
	if got != n {
		fail("read %d of %d records", got, n)
	}
	fmt.Printf("%.3f\n", took.Seconds())
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tls bench: "+format+"\n", args...)
	os.Exit(1)
}

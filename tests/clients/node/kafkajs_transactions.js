// kafkajs 2.2.4 transactions against sluice (tests/transactions.rs: kafkajs_transactions):
// a transactional producer commits 10 records, aborts 5, commits 10 more into a 2-partition
// topic; then a consume-transform-produce step sends 20 records of another topic on with
// sendOffsets in one committed transaction. A read_committed consumer (kafkajs' default) must
// see exactly the 20 committed records of the first topic, and the group's committed offsets
// of the second topic must cover its 20 records.
// usage: node kafkajs_transactions.js --bootstrap HOST:PORT
const { Kafka, logLevel } = require('kafkajs');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing --${name}`);
  return process.argv[i + 1];
}

function fail(msg) {
  console.error(`FAIL kafkajs_transactions.js: ${msg}`);
  process.exit(1);
}

async function main() {
  const kafka = new Kafka({ brokers: [arg('bootstrap')], clientId: 'kjs-txn', logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const topic = `kjs-txn-${process.pid}`;
  const src = `kjs-src-${process.pid}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }, { topic: src, numPartitions: 1 }] });

  const producer = kafka.producer({ transactionalId: `kjs-tx-${process.pid}`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const [round, n, commit] of [[0, 10, true], [1, 5, false], [2, 10, true]]) {
    const txn = await producer.transaction();
    await txn.send({
      topic,
      messages: Array.from({ length: n }, (_, i) => ({ partition: i % 2, value: `r${round}-${i}` })),
    });
    if (commit) await txn.commit(); else await txn.abort();
  }

  const consumer = kafka.consumer({ groupId: `kjs-reader-${process.pid}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); } });
  const deadline = Date.now() + 30000;
  while (got.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1500));
  await consumer.disconnect();
  if (got.length !== 20 || got.some((v) => v.startsWith('r1-'))) {
    fail(`read_committed got ${got.length} records (want 20, none of r1): ${got.join(',')}`);
  }

  // Consume-transform-produce: the offsets of `src` are committed with the output.
  const plain = kafka.producer();
  await plain.connect();
  await plain.send({ topic: src, messages: Array.from({ length: 20 }, (_, i) => ({ value: `s${i}` })) });
  await plain.disconnect();
  const group = `kjs-ctp-${process.pid}`;
  const txn = await producer.transaction();
  await txn.send({ topic, messages: Array.from({ length: 20 }, (_, i) => ({ partition: 0, value: `S${i}` })) });
  await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic: src, partitions: [{ partition: 0, offset: '20' }] }] });
  await txn.commit();
  await producer.disconnect();
  const offsets = await admin.fetchOffsets({ groupId: group, topics: [src] });
  const committed = offsets[0].partitions[0].offset;
  await admin.disconnect();
  if (committed !== '20') fail(`group offset after sendOffsets and commit: ${committed}, want 20`);
  console.log('OK kafkajs_transactions.js: 20 committed of 25 under read_committed; sendOffsets committed with the transaction');
}

main().catch((e) => fail(e.stack || String(e)));

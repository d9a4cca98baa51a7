// kafkajs 2.2.4 reads exactly the data records of a topic that also holds control batches
// (a pipeline's watermark announcements).
// usage: node kafkajs_control_records.js --bootstrap HOST:PORT --topic T --count N
const { Kafka, logLevel } = require('kafkajs');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing --${name}`);
  return process.argv[i + 1];
}

function fail(msg) {
  console.error(`FAIL kafkajs_control_records.js: ${msg}`);
  process.exit(1);
}

async function main() {
  const topic = arg('topic');
  const count = Number(arg('count'));
  const kafka = new Kafka({ brokers: [arg('bootstrap')], clientId: 'kjs-ctl', logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `kjs-ctl-${process.pid}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push(message.value === null ? '<null>' : message.value.toString());
    },
  });
  const deadline = Date.now() + 60000;
  while (got.length < count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  // A control record surfacing as a message would arrive now.
  await new Promise((r) => setTimeout(r, 2000));
  await consumer.disconnect();
  const want = Array.from({ length: count }, (_, i) => `V${i}`).sort();
  const seen = [...got].sort();
  if (JSON.stringify(seen) !== JSON.stringify(want)) {
    fail(`expected ${count} records V0..V${count - 1}, got ${got.length}: ${seen.slice(0, 5).join(',')}...`);
  }
  console.log(`OK kafkajs_control_records.js: ${count} records, no control records`);
}

main().catch((e) => fail(e.stack || String(e)));

// kafkajs 2.2.4 consumer groups: two consumers in one group share a 4-partition topic
// (2 each), read every record exactly once while committing, and a third consumer started
// after both stop resumes exactly at the committed offsets.
const { Kafka, logLevel } = require('kafkajs');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing --${name}`);
  return process.argv[i + 1];
}

function fail(msg) {
  console.error(`FAIL kafkajs_consumer_group.js: ${msg}`);
  process.exit(1);
}

async function waitFor(what, cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) fail(`${what}: not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main() {
  const kafka = new Kafka({ brokers: [arg('bootstrap')], clientId: 'kjs-group', logLevel: logLevel.NOTHING });
  const topic = `kjs-group-${process.pid}-${Date.now() % 1e9}`;
  const groupId = `kjs-g-${process.pid}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  const producer = kafka.producer({ idempotent: false });
  await producer.connect();
  const first = Array.from({ length: 400 }, (_, i) => ({ partition: i % 4, value: `a-${i}` }));
  await producer.send({ topic, acks: -1, messages: first });

  const seen = new Map();
  const assigned = new Map(); // member -> partitions from its latest GROUP_JOIN
  const consumers = [];
  for (const name of ['c1', 'c2']) {
    const c = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500, rebalanceTimeout: 20000 });
    c.on(c.events.GROUP_JOIN, (e) => assigned.set(name, (e.payload.memberAssignment[topic] || []).slice().sort()));
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({
      autoCommit: true,
      autoCommitInterval: 100,
      eachMessage: async ({ message }) => {
        const v = message.value.toString();
        if (seen.has(v)) fail(`record ${v} read twice (${seen.get(v)} and ${name})`);
        seen.set(v, name);
      },
    });
    consumers.push(c);
  }
  await waitFor('all 400 records read by the group', () => seen.size === 400, 45000);
  const split = () => ['c1', 'c2'].map((n) => assigned.get(n) || []);
  await waitFor('2 partitions per member', () => {
    const [a, b] = split();
    return a.length === 2 && b.length === 2 && new Set([...a, ...b]).size === 4;
  }, 30000);
  // Let the last auto-commit land, then stop both.
  await new Promise((r) => setTimeout(r, 1000));
  for (const c of consumers) await c.disconnect();

  const second = Array.from({ length: 200 }, (_, i) => ({ partition: i % 4, value: `b-${i}` }));
  await producer.send({ topic, acks: -1, messages: second });
  const resumed = [];
  const c3 = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await c3.connect();
  await c3.subscribe({ topic, fromBeginning: true });
  await c3.run({ eachMessage: async ({ message }) => { resumed.push(message.value.toString()); } });
  await waitFor('the new member read the 200 new records', () => resumed.length >= 200, 45000);
  await new Promise((r) => setTimeout(r, 1000));
  const wrong = resumed.filter((v) => !v.startsWith('b-'));
  if (wrong.length > 0 || resumed.length !== 200) fail(`resumed member read ${resumed.length} records, ${wrong.length} already committed (e.g. ${wrong[0]})`);
  await c3.disconnect();
  await producer.disconnect();
  await admin.disconnect();
  console.log(`OK kafkajs_consumer_group.js: members got ${JSON.stringify(split())}, 400 read once, resume read exactly the 200 new`);
}

main().catch((e) => fail(e.stack || String(e)));

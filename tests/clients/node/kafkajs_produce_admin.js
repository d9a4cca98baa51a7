#!/usr/bin/env node
'use strict'
// kafkajs 2.2.4: admin calls plus a gzip producer with acks=-1.
// kafkajs can only consume through consumer groups, which the broker does not have, so the
// records it wrote are handed to ../verify_records.py (confluent-kafka) to read back.

const { spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Kafka, CompressionTypes, ConfigResourceTypes, Partitioners, logLevel } = require('kafkajs')

const PARTITIONS = 2
const SENDS = 3
const PER_SEND = 120

class Failure extends Error {}
const check = (cond, msg) => { if (!cond) throw new Failure(msg) }
const checkEq = (actual, expected, what) => {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  check(a === e, `${what}: expected ${e}, got ${a}`)
}
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function parseArgs () {
  const i = process.argv.indexOf('--bootstrap')
  if (i < 0 || !process.argv[i + 1]) {
    console.error('usage: kafkajs_produce_admin.js --bootstrap HOST:PORT')
    process.exit(2)
  }
  return { bootstrap: process.argv[i + 1] }
}

function makeMessage (i, baseTs) {
  const value = [
    Buffer.from(`value ${i} `.repeat(1 + (i % 40))),
    Buffer.alloc(0),
    Buffer.from([0, 1, 2, 254, 255, i % 256]),
    null
  ][i % 4]
  const headers = [
    {},
    { dup: ['first', 'second'], plain: 'x' }, // arrays become repeated headers, in order
    { bin: Buffer.from([0, 255, i % 256]) }
  ][i % 3]
  return {
    partition: i % PARTITIONS,
    key: i % 7 === 0 ? null : `key-${i}`,
    value,
    headers,
    // consecutive records in a partition share a timestamp in pairs
    timestamp: String(baseTs + Math.floor(i / 4) * 5)
  }
}

const b64 = v => (v === null || v === undefined ? null : Buffer.from(v).toString('base64'))

function expectation (msg, offset) {
  const headers = []
  for (const [k, v] of Object.entries(msg.headers)) {
    for (const one of Array.isArray(v) ? v : [v]) headers.push([k, b64(one)])
  }
  return {
    partition: msg.partition,
    offset,
    key: b64(msg.key),
    value: b64(msg.value),
    headers,
    timestamp: Number(msg.timestamp)
  }
}

async function main () {
  const { bootstrap } = parseArgs()
  const kafka = new Kafka({
    clientId: 'sluice-e2e-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    retry: { retries: 3 }
  })
  const admin = kafka.admin()
  await admin.connect()
  const topic = `kafkajs-${process.pid}-${Date.now() % 1e9}`

  const created = await admin.createTopics({
    topics: [{
      topic,
      numPartitions: PARTITIONS,
      configEntries: [{ name: 'retention.ms', value: '86400000' }]
    }],
    waitForLeaders: true
  })
  checkEq(created, true, 'createTopics result')
  check((await admin.listTopics()).includes(topic), `${topic} missing from listTopics`)
  // kafkajs turns TOPIC_ALREADY_EXISTS into `false`; anything else would throw.
  checkEq(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] }), false, 'second createTopics')

  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  checkEq(md.topics.map(t => t.name), [topic], 'fetchTopicMetadata topics')
  const parts = md.topics[0].partitions.sort((a, b) => a.partitionId - b.partitionId)
  checkEq(parts.map(p => p.partitionId), [0, 1], 'partition ids')
  for (const p of parts) {
    check(p.partitionErrorCode === 0 && p.leader >= 0, `partition ${p.partitionId}: ${JSON.stringify(p)}`)
    checkEq([p.replicas, p.isr], [[p.leader], [p.leader]], `replicas/isr of partition ${p.partitionId}`)
  }

  const producer = kafka.producer({
    idempotent: false,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner
  })
  await producer.connect()
  const baseTs = Date.now() - 3600 * 1000
  const expected = []
  for (let s = 0; s < SENDS; s++) {
    const messages = []
    for (let j = 0; j < PER_SEND; j++) messages.push(makeMessage(s * PER_SEND + j, baseTs))
    const result = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages })
    checkEq(result.map(r => r.errorCode), result.map(() => 0), `send ${s} error codes`)
    // kafkajs keeps each partition's messages in order in one batch starting at baseOffset.
    for (const r of result) {
      const mine = messages.filter(m => m.partition === r.partition)
      mine.forEach((m, k) => expected.push(expectation(m, Number(r.baseOffset) + k)))
    }
    checkEq(expected.length, (s + 1) * PER_SEND, `records acknowledged after send ${s}`)
  }
  await producer.disconnect()

  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kafkajs-')), 'expected.json')
  fs.writeFileSync(file, JSON.stringify(expected))
  const verify = spawnSync('python3', [path.join(__dirname, '..', 'verify_records.py'),
    '--bootstrap', bootstrap, '--topic', topic, '--expect', file], { stdio: 'inherit' })
  check(verify.status === 0, `verify_records.py rejected what kafkajs produced (exit ${verify.status}, ${verify.error || ''})`)

  const perPartition = p => expected.filter(r => r.partition === p).sort((a, b) => a.offset - b.offset)
  const offsets = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition)
  checkEq(offsets.map(o => [o.partition, o.low, o.high, o.offset]),
    [0, 1].map(p => [p, '0', String(perPartition(p).length), String(perPartition(p).length)]),
    'fetchTopicOffsets [partition, low, high, offset]')

  // The earliest offset with timestamp >= t; kafkajs substitutes the high watermark for "none".
  const last = perPartition(0).at(-1).timestamp
  for (const t of [baseTs - 1000, baseTs, baseTs + 100, baseTs + 101, last, last + 1]) {
    const got = (await admin.fetchTopicOffsetsByTimestamp(topic, t)).sort((a, b) => a.partition - b.partition)
    const want = [0, 1].map(p => {
      const recs = perPartition(p)
      const hit = recs.find(r => r.timestamp >= t)
      return { partition: p, offset: String(hit ? hit.offset : recs.length) }
    })
    checkEq(got, want, `fetchTopicOffsetsByTimestamp t=${t}`)
  }

  const describe = async names => {
    const res = await admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: names }],
      includeSynonyms: false
    })
    checkEq(res.resources.map(r => [r.resourceName, r.errorCode]), [[topic, 0]], 'describeConfigs resources')
    return Object.fromEntries(res.resources[0].configEntries.map(e => [e.configName, e.configValue]))
  }
  checkEq(await describe(['retention.ms', 'max.message.bytes']),
    { 'retention.ms': '86400000', 'max.message.bytes': '1048588' }, 'describeConfigs after create')
  await admin.alterConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '3600000' }] }]
  })
  checkEq(await describe(['retention.ms']), { 'retention.ms': '3600000' }, 'describeConfigs after alterConfigs')

  await admin.deleteTopics({ topics: [topic], timeout: 10000 })
  for (let tries = 0; (await admin.listTopics()).includes(topic); tries++) {
    check(tries < 50, `${topic} still listed 10 s after deleteTopics`)
    await sleep(200)
  }
  await admin.disconnect()
  console.log(`OK kafkajs_produce_admin.js: ${expected.length} gzip records (acks -1) verified; admin calls checked`)
}

main().catch(e => {
  console.error(e instanceof Failure ? `FAIL kafkajs_produce_admin.js: ${e.message}` : e)
  if (!(e instanceof Failure)) console.error('FAIL kafkajs_produce_admin.js: unexpected error (see above)')
  process.exit(1)
})

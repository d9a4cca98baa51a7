#!/usr/bin/env node
'use strict'
// kafkajs 2.2.4 over SASL_SSL (see tests/security.rs for the broker's setup): SCRAM-SHA-256 as
// admin produces, PLAIN as alice consumes the same records through a consumer group, and a
// wrong password is refused with an authentication error.

const fs = require('fs')
const path = require('path')
const { Kafka, logLevel } = require('kafkajs')

class Failure extends Error {}
const check = (cond, msg) => { if (!cond) throw new Failure(msg) }

function arg (name) {
  const i = process.argv.indexOf(name)
  if (i < 0 || !process.argv[i + 1]) {
    console.error(`usage: kafkajs_security.js --sasl-ssl HOST:PORT --certs DIR (missing ${name})`)
    process.exit(2)
  }
  return process.argv[i + 1]
}

const broker = arg('--sasl-ssl')
const ca = fs.readFileSync(path.join(arg('--certs'), 'ca.pem'))
const client = (mechanism, username, password) => new Kafka({
  clientId: 'kafkajs-security',
  brokers: [broker],
  ssl: { ca: [ca], servername: 'localhost' },
  sasl: { mechanism, username, password },
  logLevel: logLevel.NOTHING,
  retry: { retries: 2 }
})

async function main () {
  const topic = `kjs-sec-${process.pid}-${Date.now()}`
  const admin = client('scram-sha-256', 'admin', 'adminpw')
  const a = admin.admin()
  await a.connect()
  await a.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
  await a.disconnect()
  const producer = admin.producer()
  await producer.connect()
  const sent = Array.from({ length: 20 }, (_, i) => `v${i}`)
  await producer.send({ topic, acks: -1, messages: sent.map(value => ({ value })) })
  await producer.disconnect()

  const consumer = client('plain', 'alice', 'alicepw').consumer({ groupId: `g-${topic}` })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Failure(`consumed ${got.length} of ${sent.length}`)), 60000)
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message.value.toString())
        if (got.length === sent.length) { clearTimeout(timer); resolve() }
      }
    }).catch(reject)
  })
  await consumer.disconnect()
  check(JSON.stringify(got) === JSON.stringify(sent), `consumed ${JSON.stringify(got)}`)

  let refused = null
  const bad = client('scram-sha-512', 'alice', 'wrong').producer()
  try {
    await bad.connect()
  } catch (e) {
    refused = e
  }
  check(refused && /SASL|auth/i.test(`${refused.name} ${refused.message}`), `wrong password: ${refused}`)

  // OAUTHBEARER: kafkajs asks its provider for a token; an unsecured one (alg none) here,
  // which this test broker allows. The token names alice; her topic's metadata comes back.
  const b64 = s => Buffer.from(s).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  const token = `${b64('{"alg":"none"}')}.${b64(JSON.stringify({ sub: 'alice', iat: now, exp: now + 600 }))}.`
  const oauth = new Kafka({
    clientId: 'kafkajs-oauth',
    brokers: [broker],
    ssl: { ca: [ca], servername: 'localhost' },
    sasl: { mechanism: 'oauthbearer', oauthBearerProvider: async () => ({ value: token }) },
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 }
  }).admin()
  await oauth.connect()
  const md = await oauth.fetchTopicMetadata({ topics: [topic] })
  await oauth.disconnect()
  check(md.topics.length === 1 && md.topics[0].name === topic, `metadata over OAUTHBEARER: ${JSON.stringify(md)}`)
  return `${sent.length} records (SCRAM-SHA-256 in, PLAIN out); wrong password refused (${refused.name}); OAUTHBEARER metadata`
}

main().then(summary => {
  console.log(`OK kafkajs_security.js: ${summary}`)
}).catch(e => {
  console.error(`FAIL kafkajs_security.js: ${e instanceof Failure ? e.message : e.stack}`)
  process.exit(1)
})

#!/usr/bin/env node
'use strict'
// kafkajs 2.2.4 reading the answers of the admin APIs as its own test suite does: where
// nothing went wrong Kafka sends a null error message, and kafkajs hands it on as `null`
// (its suite's CreateTopics, AlterConfigs, DescribeConfigs and ACL tests assert exactly that).
// sluice used to send "" in each of these. Also: the broker's DescribeConfigs lists
// `default.replication.factor`, which kafkajs' createTopics test reads, and topics take the
// Kafka 3.x configs its produce tests set.
// Needs a broker with ACLs on and ANONYMOUS a super user (see tests/clients.rs).

const { Kafka, ConfigResourceTypes, AclResourceTypes, AclOperationTypes, AclPermissionTypes, ResourcePatternTypes, logLevel } = require('kafkajs')
// kafkajs' own request layer, as its tests use it: the admin client hides some of these fields.
const Broker = require('kafkajs/src/broker')
const ConnectionPool = require('kafkajs/src/network/connectionPool')
const socketFactory = require('kafkajs/src/network/socketFactory')
const { createLogger } = require('kafkajs/src/loggers')
const LoggerConsole = require('kafkajs/src/loggers/console')

class Failure extends Error {}
const check = (cond, msg) => { if (!cond) throw new Failure(msg) }
// Every errorMessage in the answer, wherever it sits, with the path to it.
const messages = (o, at = '') => {
  if (o === null || typeof o !== 'object') return []
  return Object.entries(o).flatMap(([k, v]) => k === 'errorMessage' ? [[`${at}.${k}`, v]] : messages(v, `${at}.${k}`))
}
const allNull = (what, answer) => {
  const found = messages(answer)
  check(found.length > 0, `${what}: no errorMessage in ${JSON.stringify(answer)}`)
  for (const [where, v] of found) check(v === null, `${what}: ${where} is ${JSON.stringify(v)}, Kafka sends null`)
  return found.length
}

async function main () {
  const i = process.argv.indexOf('--bootstrap')
  const [host, port] = process.argv[i + 1].split(':')
  const logger = createLogger({ level: logLevel.NOTHING, logCreator: LoggerConsole })
  const pool = new ConnectionPool({
    socketFactory: socketFactory(), clientId: 'kafkajs-null-messages', connectionTimeout: 3000, requestTimeout: 30000, logger, host, port: Number(port)
  })
  const broker = new Broker({ connectionPool: pool, logger })
  await broker.connect()
  const admin = new Kafka({ brokers: [`${host}:${port}`], logLevel: logLevel.NOTHING }).admin()
  await admin.connect()
  const topic = `kjs-null-${process.pid}-${Date.now() % 1e9}`
  let checked = 0

  // Two Kafka 3.x topic configs that Kafka 4 dropped: 3.x clients (kafkajs' produce tests)
  // still create topics with them.
  const configEntries = [
    { name: 'message.timestamp.difference.max.ms', value: '86400000' },
    { name: 'message.format.version', value: '2.4-IV1' }
  ]
  checked += allNull('CreateTopics validateOnly', await broker.createTopics({ topics: [{ topic, numPartitions: 1, configEntries }], validateOnly: true }))
  checked += allNull('CreateTopics', await broker.createTopics({ topics: [{ topic, numPartitions: 1, configEntries }] }))
  const dup = await broker.createTopics({ topics: [{ topic, numPartitions: 1 }] }).catch(e => e)
  // An error still carries its message: kafkajs gathers each topic's error in `errors`.
  const why = (dup.errors || [dup])[0]
  check(why.type === 'TOPIC_ALREADY_EXISTS' && /exists/i.test(why.message), `second CreateTopics: ${dup} ${why && why.type}`)

  const res = { type: ConfigResourceTypes.TOPIC, name: topic }
  const configs = async names => {
    const d = await admin.describeConfigs({ resources: [{ ...res, configNames: names }], includeSynonyms: false })
    checked += allNull('DescribeConfigs', d)
    return d.resources[0].configEntries.map(e => `${e.configName}=${e.configValue}`).sort()
  }
  const created = await configs(['message.timestamp.difference.max.ms'])
  check(JSON.stringify(created) === '["message.timestamp.difference.max.ms=86400000"]', `topic configs after create: ${JSON.stringify(created)}`)
  checked += allNull('AlterConfigs', await admin.alterConfigs({ resources: [{ ...res, configEntries: [{ name: 'retention.ms', value: '3600000' }] }] }))
  // AlterConfigs (not the incremental one) replaces the whole set, as Kafka's does.
  const altered = await configs(['retention.ms', 'message.timestamp.difference.max.ms'])
  check(JSON.stringify(altered) === JSON.stringify(['message.timestamp.difference.max.ms=9223372036854775807', 'retention.ms=3600000']),
    `topic configs after AlterConfigs: ${JSON.stringify(altered)}`)

  // The broker's view: kafkajs' createTopics test asks for both of these.
  const { brokers } = await admin.describeCluster()
  const described = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.BROKER, name: String(brokers[0].nodeId), configNames: ['default.replication.factor', 'num.partitions'] }],
    includeSynonyms: false
  })
  checked += allNull('DescribeConfigs BROKER', described)
  const names = described.resources[0].configEntries.map(e => `${e.configName}=${e.configValue}`).sort()
  check(JSON.stringify(names.map(n => n.split('=')[0])) === JSON.stringify(['default.replication.factor', 'num.partitions']),
    `broker configs: ${JSON.stringify(names)}`)
  check(names.includes('default.replication.factor=1'), `broker configs: ${JSON.stringify(names)}`)

  const acl = {
    resourceType: AclResourceTypes.TOPIC,
    resourceName: topic,
    resourcePatternType: ResourcePatternTypes.LITERAL,
    principal: 'User:alice',
    host: '*',
    operation: AclOperationTypes.READ,
    permissionType: AclPermissionTypes.ALLOW
  }
  checked += allNull('CreateAcls', await broker.createAcls({ acl: [acl] }))
  const listed = await broker.describeAcls({ ...acl, principal: null, host: null, operation: AclOperationTypes.ANY, permissionType: AclPermissionTypes.ANY })
  check(listed.resources.length === 1, `DescribeAcls found ${JSON.stringify(listed.resources)}`)
  checked += allNull('DescribeAcls', listed)
  const deleted = await admin.deleteAcls({ filters: [{ ...acl, operation: AclOperationTypes.ANY }] })
  check(deleted.filterResponses[0].matchingAcls.length === 1, `DeleteAcls matched ${JSON.stringify(deleted)}`)
  checked += allNull('DeleteAcls', deleted)

  await admin.deleteTopics({ topics: [topic] })
  await admin.disconnect()
  await broker.disconnect()
  return `${checked} error messages null where nothing failed (CreateTopics, AlterConfigs, DescribeConfigs, CreateAcls, DescribeAcls, DeleteAcls); the broker lists default.replication.factor`
}

main().then(summary => {
  console.log(`OK kafkajs_null_messages.js: ${summary}`)
}).catch(e => {
  console.error(`FAIL kafkajs_null_messages.js: ${e instanceof Failure ? e.message : e.stack}`)
  process.exit(1)
})

#!/usr/bin/env node
// Starts kinesalite (a Kinesis-API server, in memory) on 127.0.0.1 only, for
// the Kinesis source's tests, optionally injecting faults.
//
//   node scripts/kinesis/kinesalite.js [--port N] [--throttle-every N]
//        [--fail-put-records-every N] [--expire-iterators-every N] [--create-stream-ms N]
//        [--delete-stream-ms N] [--update-stream-ms N] [--shard-limit N]
//        [--exit-with-stdin]
//
// --port N                    0 or absent: a free port picked by the OS.
// --throttle-every N          every Nth GetRecords, every Nth PutRecord and
//                             every Nth PutRecords request (counted per
//                             operation) is answered with HTTP 400
//                             ProvisionedThroughputExceededException instead
//                             of reaching kinesalite.
// --fail-put-records-every N  every Nth record of PutRecords (counted over all
//                             PutRecords requests that reach kinesalite) is
//                             not stored and comes back as a failed entry
//                             (ErrorCode ProvisionedThroughputExceededException);
//                             FailedRecordCount counts it.
// --expire-iterators-every N  every Nth GetRecords request (after the ones
//                             throttled) is answered with HTTP 400
//                             ExpiredIteratorException: the client must get a
//                             new iterator and lose nothing.
// --create-stream-ms N        how long a new stream stays CREATING (default 50;
//                             kinesalite's own default is 500). Also the
//                             default of --delete-stream-ms (DELETING) and
//                             --update-stream-ms (UPDATING after a split or
//                             merge).
// --shard-limit N             most open shards over all streams (default 100;
//                             kinesalite's own default is 10).
// --exit-with-stdin           exit when stdin closes, so a server started by a
//                             test that dies (even by kill -9) does not outlive it.
//                             Only with a piped stdin (EOF at once from /dev/null).
//
// Once listening it prints one line, `listening 127.0.0.1:PORT`, to stdout;
// nothing else goes to stdout. Ends with exit code 0 on SIGTERM or SIGINT.
//
// Beyond kinesalite 3.3.3:
// - ListShards with a NextToken and no StreamName is answered with
//   InvalidArgumentException (kinesalite never issues a NextToken, and that
//   request would kill its process).
//
// kinesalite is loaded from target/toolchains/kinesis, installed by
// `scripts/kinesis/setup.sh setup`. Its own CLI binds every
// interface, hence this script.
'use strict'

const crypto = require('crypto')
const http = require('http')
const path = require('path')
const { PassThrough } = require('stream')

const USAGE = 'usage: node scripts/kinesis/kinesalite.js [--port N] [--throttle-every N] ' +
  '[--fail-put-records-every N] [--create-stream-ms N] [--delete-stream-ms N] ' +
  '[--update-stream-ms N] [--shard-limit N] [--exit-with-stdin]'

function fail(msg) {
  process.stderr.write(`kinesalite.js: ${msg}\n${USAGE}\n`)
  process.exit(2)
}

// ---- arguments -------------------------------------------------------------

const opts = {
  port: 0,
  throttleEvery: 0, // 0 = off
  failPutRecordsEvery: 0, // 0 = off
  expireIteratorsEvery: 0, // 0 = off
  createStreamMs: 50,
  deleteStreamMs: null,
  updateStreamMs: null,
  shardLimit: 100,
  exitWithStdin: false,
}
const numeric = {
  '--port': ['port', 0, 65535],
  '--throttle-every': ['throttleEvery', 1, Number.MAX_SAFE_INTEGER],
  '--fail-put-records-every': ['failPutRecordsEvery', 1, Number.MAX_SAFE_INTEGER],
  '--expire-iterators-every': ['expireIteratorsEvery', 1, Number.MAX_SAFE_INTEGER],
  '--create-stream-ms': ['createStreamMs', 0, 3600000],
  '--delete-stream-ms': ['deleteStreamMs', 0, 3600000],
  '--update-stream-ms': ['updateStreamMs', 0, 3600000],
  '--shard-limit': ['shardLimit', 1, 100000],
}
{
  const args = process.argv.slice(2)
  for (let i = 0; i < args.length; i++) {
    let name = args[i]
    let value
    const eq = name.indexOf('=')
    if (name.startsWith('--') && eq > 0) {
      value = name.slice(eq + 1)
      name = name.slice(0, eq)
    }
    if (name === '--help' || name === '-h') {
      process.stdout.write(USAGE + '\n')
      process.exit(0)
    }
    if (name === '--exit-with-stdin' && value === undefined) {
      opts.exitWithStdin = true
      continue
    }
    const spec = numeric[name]
    if (!spec) fail(`unknown argument ${JSON.stringify(args[i])}`)
    if (value === undefined) {
      if (i + 1 >= args.length) fail(`${name} needs a value`)
      value = args[++i]
    }
    const [key, min, max] = spec
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      fail(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(value)}`)
    }
    opts[key] = Number(value)
  }
  if (opts.deleteStreamMs === null) opts.deleteStreamMs = opts.createStreamMs
  if (opts.updateStreamMs === null) opts.updateStreamMs = opts.createStreamMs
}

// ---- kinesalite --------------------------------------------------------------

const kinesalitePath = path.join(__dirname, '..', '..', 'target', 'toolchains', 'kinesis',
  'node_modules', 'kinesalite')
let kinesalite, cbor
try {
  kinesalite = require(kinesalitePath)
  // kinesalite's own dependency; for clients that send CBOR (the Java SDK
  // does by default; the Rust SDK and boto3 send JSON).
  cbor = require(require.resolve('cbor', { paths: [kinesalitePath] }))
} catch (e) {
  process.stderr.write(`kinesalite.js: cannot load ${kinesalitePath} (${e.message});` +
    ' run scripts/kinesis/setup.sh setup kinesalite\n')
  process.exit(1)
}

// No `path` option: kinesalite then keeps everything in memory (memdown);
// with one it would need the native leveldown, which setup.sh leaves out.
const inner = kinesalite({
  createStreamMs: opts.createStreamMs,
  deleteStreamMs: opts.deleteStreamMs,
  updateStreamMs: opts.updateStreamMs,
  shardLimit: opts.shardLimit,
})
// kinesalite() returns an http.Server that is never listened on; its request
// handler is used by the server below, which can answer first.
const kinesaliteHandler = inner.listeners('request')[0]

// ---- what is answered here rather than by kinesalite -------------------------

const AMZ_JSON = 'application/x-amz-json-1.1'
const AMZ_CBOR = 'application/x-amz-cbor-1.1'
const THROTTLED_TARGETS = new Set([
  'Kinesis_20131202.GetRecords',
  'Kinesis_20131202.PutRecord',
  'Kinesis_20131202.PutRecords',
])
const THROTTLE_BODY = {
  __type: 'ProvisionedThroughputExceededException',
  message: 'Rate exceeded for shard (injected by kinesalite.js --throttle-every)',
}
const EXPIRED_BODY = {
  __type: 'ExpiredIteratorException',
  message: 'Iterator expired (injected by kinesalite.js --expire-iterators-every)',
}
let getRecordsSeen = 0 // for --expire-iterators-every
const FAILED_ENTRY = {
  ErrorCode: 'ProvisionedThroughputExceededException',
  ErrorMessage: 'Rate exceeded for shard (injected by kinesalite.js --fail-put-records-every)',
}

const requestCounts = new Map() // X-Amz-Target -> requests seen
let putRecordsRecordCount = 0 // records seen in PutRecords requests

function contentTypeOf(req) {
  return (req.headers['content-type'] || '').split(';')[0].trim()
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

function decode(contentType, body) {
  return contentType === AMZ_CBOR ? cbor.Decoder.decodeFirstSync(body) : JSON.parse(body.toString())
}

function encode(contentType, value) {
  return contentType === AMZ_CBOR ? cbor.Encoder.encodeOne(value) : Buffer.from(JSON.stringify(value))
}

function send(res, statusCode, contentType, body) {
  res.statusCode = statusCode
  res.setHeader('x-amzn-RequestId', crypto.randomUUID()) // as kinesalite's answers have
  res.setHeader('Content-Type', contentType)
  res.setHeader('Content-Length', body.length)
  res.end(body)
}

// Runs kinesalite's handler on a request made here (same headers, given
// body) and resolves with what it answered, without sending anything.
function callKinesalite(req, body) {
  return new Promise((resolve) => {
    const fakeReq = new PassThrough()
    fakeReq.method = req.method
    fakeReq.url = req.url
    fakeReq.headers = { ...req.headers, 'content-length': String(body.length) }
    const headers = {}
    const fakeRes = {
      statusCode: 200,
      setHeader(name, value) { headers[name.toLowerCase()] = value },
      getHeader(name) { return headers[name.toLowerCase()] },
      end(data) {
        resolve({ statusCode: this.statusCode, headers, body: data == null ? Buffer.alloc(0) : Buffer.from(data) })
      },
    }
    kinesaliteHandler(fakeReq, fakeRes)
    fakeReq.end(body)
  })
}

// PutRecords with --fail-put-records-every: the records picked to fail are
// removed from the request, the rest go to kinesalite, and failed entries are
// put back into its answer at the picked indexes.
async function putRecordsWithFailures(req, res) {
  const body = await readBody(req)
  const contentType = contentTypeOf(req)
  let request
  try {
    request = decode(contentType, body)
  } catch (e) {
    request = null
  }
  // Anything kinesalite would refuse (bad JSON, missing auth, bad fields):
  // give it the request unchanged, so the error is kinesalite's own.
  let valid = request && typeof request === 'object' && Array.isArray(request.Records) &&
    request.Records.length >= 1 && request.Records.length <= 500 &&
    (contentType === AMZ_JSON || contentType === AMZ_CBOR) && req.method === 'POST' &&
    (req.headers.authorization || (req.url || '').includes('X-Amz-Algorithm'))
  if (valid) {
    try {
      const v = require(path.join(kinesalitePath, 'validations', 'putRecords'))
      const validations = require(path.join(kinesalitePath, 'validations'))
      const checked = validations.checkTypes(decode(contentType, body), v.types) // a copy: it edits its input
      validations.checkValidations(checked, v.types, v.custom, 'PutRecords')
    } catch (e) {
      valid = false
    }
  }
  if (!valid) return relay(res, await callKinesalite(req, body))

  const failAt = new Set()
  request.Records.forEach((_, i) => {
    putRecordsRecordCount++
    if (putRecordsRecordCount % opts.failPutRecordsEvery === 0) failAt.add(i)
  })
  if (failAt.size === 0) return relay(res, await callKinesalite(req, body))

  const kept = request.Records.filter((_, i) => !failAt.has(i))
  let answer
  if (kept.length === 0) {
    // Nothing left to store (kinesalite refuses an empty Records list).
    answer = { FailedRecordCount: 0, Records: [] }
  } else {
    const result = await callKinesalite(req, encode(contentType, { ...request, Records: kept }))
    if (result.statusCode !== 200) return relay(res, result)
    answer = decode(contentType, result.body)
  }
  const stored = answer.Records || []
  const merged = []
  let next = 0
  for (let i = 0; i < request.Records.length; i++) {
    merged.push(failAt.has(i) ? { ...FAILED_ENTRY } : stored[next++])
  }
  answer.Records = merged
  answer.FailedRecordCount = (answer.FailedRecordCount || 0) + failAt.size
  send(res, 200, contentType, encode(contentType, answer))
}

function relay(res, result) {
  res.statusCode = result.statusCode
  for (const [name, value] of Object.entries(result.headers)) res.setHeader(name, value)
  res.setHeader('Content-Length', result.body.length)
  res.end(result.body)
}

// kinesalite 3.3.3 never returns a NextToken from ListShards, and a
// ListShards with a NextToken and no StreamName kills its process (it looks
// up the stream `undefined`: "ReadError: key cannot be `null` or
// `undefined`", thrown from a callback). Answer that request here.
async function listShards(req, res) {
  const body = await readBody(req)
  const contentType = contentTypeOf(req)
  let request = null
  try {
    request = decode(contentType, body)
  } catch (e) {}
  if (request && typeof request === 'object' && request.NextToken != null && request.StreamName == null) {
    return send(res, 400, contentType === AMZ_CBOR ? AMZ_CBOR : AMZ_JSON, encode(contentType === AMZ_CBOR ? AMZ_CBOR : AMZ_JSON, {
      __type: 'InvalidArgumentException',
      message: 'Invalid NextToken (kinesalite issues none; answered by kinesalite.js).',
    }))
  }
  relay(res, await callKinesalite(req, body))
}

function run(name, fn, req, res) {
  fn(req, res).catch((e) => {
    process.stderr.write(`kinesalite.js: ${name} failed: ${e.stack}\n`)
    if (!res.headersSent) send(res, 500, AMZ_JSON, Buffer.from('{"__type":"InternalFailure"}'))
  })
}

function handle(req, res) {
  const target = req.headers['x-amz-target'] || ''
  if (target === 'Kinesis_20131202.ListShards') return run('ListShards', listShards, req, res)
  if (opts.throttleEvery && THROTTLED_TARGETS.has(target)) {
    const n = (requestCounts.get(target) || 0) + 1
    requestCounts.set(target, n)
    if (n % opts.throttleEvery === 0) {
      req.resume() // drain the body
      req.on('end', () => {
        const contentType = contentTypeOf(req) === AMZ_CBOR ? AMZ_CBOR : AMZ_JSON
        send(res, 400, contentType, encode(contentType, THROTTLE_BODY))
      })
      return
    }
  }
  if (opts.expireIteratorsEvery && target === 'Kinesis_20131202.GetRecords') {
    getRecordsSeen += 1
    if (getRecordsSeen % opts.expireIteratorsEvery === 0) {
      req.resume()
      req.on('end', () => {
        const contentType = contentTypeOf(req) === AMZ_CBOR ? AMZ_CBOR : AMZ_JSON
        send(res, 400, contentType, encode(contentType, EXPIRED_BODY))
      })
      return
    }
  }
  if (opts.failPutRecordsEvery && target === 'Kinesis_20131202.PutRecords') {
    return run('PutRecords', putRecordsWithFailures, req, res)
  }
  kinesaliteHandler(req, res)
}

// ---- server ------------------------------------------------------------------

const server = http.createServer(handle)
server.on('error', (e) => {
  process.stderr.write(`kinesalite.js: ${e.message}\n`)
  process.exit(1)
})
server.listen(opts.port, '127.0.0.1', () => {
  const { address, port } = server.address()
  // Writes to a pipe or file are synchronous in Node on Linux: the line is
  // out before anything else happens.
  process.stdout.write(`listening ${address}:${port}\n`)
})

function stop() {
  server.close()
  server.closeAllConnections() // keep-alive clients would hold close() open
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
if (opts.exitWithStdin) {
  process.stdin.on('end', stop)
  process.stdin.on('close', stop)
  process.stdin.on('error', stop)
  process.stdin.resume()
}

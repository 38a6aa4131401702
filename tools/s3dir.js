#!/usr/bin/env node
// s3rver serving a directory, plus the conditional writes Tansu relies on.
//
// Tansu creates a partition's watermark with `If-None-Match: *` and advances it with
// `If-Match: <etag>`. s3rver 3.7.1 ignores both headers, so after a restart Tansu's
// "create if absent" silently reset every watermark to 0 and the next produce overwrote
// offset 0 of the old log (seen: a restarted broker handed out offset 0 again). This
// wrapper answers 412 PreconditionFailed as S3 does, one request per object at a time.
//
// usage: node s3dir.js DIRECTORY HOST PORT BUCKET
'use strict';

const path = require('path');
const S3rver = require(path.join(__dirname, 'node_modules', 's3rver'));
const S3Error = require(path.join(__dirname, 'node_modules', 's3rver', 'lib', 'models', 'error'));

const [directory, address, port, bucket] = process.argv.slice(2);
if (!directory || !address || !port || !bucket) {
  console.error('usage: node s3dir.js DIRECTORY HOST PORT BUCKET');
  process.exit(2);
}

const queues = new Map(); // object path -> tail of the promise chain of its conditional writes

function failed(condition) {
  return new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold',
    { Condition: condition });
}

async function check(ctx) {
  const [, bucketName, ...rest] = ctx.path.split('/');
  const key = rest.map(decodeURIComponent).join('/');
  const exists = await ctx.store.existsObject(bucketName, key);
  const noneMatch = ctx.get('if-none-match');
  const match = ctx.get('if-match');
  if (noneMatch === '*' && exists) throw failed('If-None-Match');
  if (match) {
    if (!exists) throw failed('If-Match');
    const { etag } = await ctx.store.getMetadata(bucketName, key);
    if (match !== '*' && match !== etag) throw failed('If-Match');
  }
}

async function conditional(ctx, next) {
  if (ctx.method !== 'PUT' || !(ctx.get('if-none-match') || ctx.get('if-match'))) return next();
  // Check and write as one step per object: two racing creates must not both succeed.
  const previous = queues.get(ctx.path) || Promise.resolve();
  let release;
  const mine = new Promise((resolve) => { release = resolve; });
  const tail = previous.then(() => mine);
  queues.set(ctx.path, tail);
  await previous;
  try {
    await check(ctx);
    await next();
  } finally {
    release();
    if (queues.get(ctx.path) === tail) queues.delete(ctx.path);
  }
}

const server = new S3rver({ directory, address, port: Number(port), silent: true,
  configureBuckets: [{ name: bucket, configs: [] }] });
server.middleware.splice(server.middleware.length - 1, 0, conditional); // just before the router
server.run().then(({ port: bound }) => {
  console.log(`s3dir: serving ${directory} on ${address}:${bound}, bucket ${bucket}`);
}, (err) => {
  console.error(`s3dir: cannot start: ${err.message}`);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().then(() => process.exit(0), () => process.exit(0)));
}

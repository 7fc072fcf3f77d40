// SPDX-License-Identifier: MIT
// Preload workload for node: objects, Maps, JSON, Buffers, crypto hashes, a big array sort and
// zlib. V8 keeps JS objects on its own heap, so Buffers, zlib and crypto are the parts that
// reach malloc most; they are sized to matter. Deterministic: our own LCG, no Date/Math.random.
'use strict';
const crypto = require('crypto');
const zlib = require('zlib');

const total = crypto.createHash('sha256');
function report(name, value) {
  let text = typeof value === 'string' ? value : JSON.stringify(value);
  total.update(`${name}\0${text}\0`);
  if (text.length > 96) text = 'sha256:' + crypto.createHash('sha256').update(text).digest('hex').slice(0, 32);
  console.log(`${name}: ${text}`);
}

// Park-Miller LCG: exact in doubles.
let seed = 4242;
const rnd = (n) => { seed = (seed * 16807) % 2147483647; return seed % n; };

// Objects and Maps.
const objs = [];
for (let i = 0; i < 100000; i++) objs.push({ id: i, name: `item-${i}`, tags: Array.from({ length: i % 6 }, (_, j) => j * i) });
const m = new Map();
for (const o of objs) m.set(`k${rnd(40000)}`, o);
for (const k of [...m.keys()].filter((k) => k.endsWith('3'))) m.delete(k);
report('map.size', m.size);
report('map.first', [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).slice(0, 3).map(([k, v]) => [k, v.id]));

// JSON round trip.
const doc = objs.slice(0, 30000);
const enc = JSON.stringify(doc);
const back = JSON.parse(enc);
report('json.len', enc.length);
report('json.equal', JSON.stringify(back) === enc);
report('json.sha', crypto.createHash('sha256').update(enc).digest('hex'));

// Buffers: many small ones, concatenated, sliced and copied.
const bufs = [];
for (let i = 0; i < 50000; i++) {
  const b = Buffer.alloc(1 + (i % 300));
  b.fill(i % 251);
  if (b.length >= 4) b.writeUInt32LE(i, 0);
  bufs.push(b);
}
const cat = Buffer.concat(bufs);
const copy = Buffer.from(cat.subarray(1000, cat.length - 1000));
report('buf.len', cat.length);
report('buf.md5', crypto.createHash('md5').update(copy).digest('hex'));
report('buf.b64', crypto.createHash('sha1').update(cat.toString('base64')).digest('hex'));

// crypto: several algorithms, HMAC, and a deterministic key derivation.
report('sha512', crypto.createHash('sha512').update(cat).digest('hex').slice(0, 64));
report('hmac', crypto.createHmac('sha256', 'key').update(enc).digest('hex'));
report('pbkdf2', crypto.pbkdf2Sync('password', 'salt', 2000, 32, 'sha256').toString('hex'));

// A big sort of numbers and of strings.
const nums = Array.from({ length: 500000 }, () => rnd(1000000000));
nums.sort((a, b) => a - b);
const strs = nums.slice(0, 200000).map((n) => n.toString(36));
strs.sort();
report('sort.num', [nums[0], nums[1], nums[250000], nums[nums.length - 1]]);
report('sort.str', crypto.createHash('sha256').update(strs.join(',')).digest('hex'));

// zlib: sync deflate/gunzip and brotli round trips.
const text = Buffer.from(nums.slice(0, 200000).join('\n'));
const deflated = zlib.deflateSync(text, { level: 6 });
const gz = zlib.gzipSync(text);
const br = zlib.brotliCompressSync(text, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } });
report('zlib.deflate', zlib.inflateSync(deflated).equals(text));
report('zlib.gzip', zlib.gunzipSync(gz).equals(text));
report('zlib.brotli', zlib.brotliDecompressSync(br).equals(text));
report('zlib.sha', crypto.createHash('sha256').update(deflated).digest('hex'));

// Async zlib uses the libuv thread pool, so allocations also happen off the main thread.
const jobs = [];
for (let i = 0; i < 16; i++) {
  const chunk = cat.subarray(i * 100000, (i + 1) * 100000);
  jobs.push(new Promise((resolve, reject) => zlib.deflate(chunk, (err, out) => (err ? reject(err) : resolve(zlib.inflateSync(out).equals(chunk))))));
}
Promise.all(jobs).then((ok) => {
  report('zlib.async', ok);
  console.log('digest: ' + total.digest('hex'));
}).catch((err) => { console.error(err); process.exit(1); });

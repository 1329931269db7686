// Encodes texts with the reference encoder, gpt-3-encoder@1.1.4's Encoder.js.
// Usage: node node_encode.js ENCODER_JS IN.json OUT.json
//   IN.json: a list of strings; OUT.json: the list of their id lists.
// With --time: prints "seconds tokens" of the encoding alone instead.
'use strict';
const fs = require('fs');
const args = process.argv.slice(2);
const time = args[0] === '--time';
if (time) args.shift();
const { encode } = require(require('path').resolve(args[0]));
const texts = JSON.parse(fs.readFileSync(args[1], 'utf-8'));
const start = process.hrtime.bigint();
const ids = texts.map((t) => encode(t));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
if (time)
  fs.writeFileSync(args[2], JSON.stringify([seconds, ids.reduce((n, x) => n + x.length, 0)]));
else
  fs.writeFileSync(args[2], JSON.stringify(ids));

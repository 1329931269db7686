// Encodes texts with the reference encoder, gpt-3-encoder@1.1.4's Encoder.js.
// Usage: node node_encode.js [--time] ENCODER_JS IN.json OUT.json
//   IN.json: a list of strings; OUT.json: the list of their id lists, or with
//   --time [seconds, tokens] of the encoding alone.
//
// Encoder.js's encode() grows its result with Array.concat per word, which is
// quadratic in the text (a 1 MB text takes many minutes). Long texts are
// therefore encoded in pieces cut only between an ASCII letter and a space
// followed by an ASCII letter: GPT-2's pattern always ends a match there (no
// alternative runs from a letter into white space) and always starts the
// next with " ?\p{L}+", whatever came before, so the ids of the pieces, put
// together, are the ids of the whole text.
'use strict';
const fs = require('fs');
const args = process.argv.slice(2);
const time = args[0] === '--time';
if (time) args.shift();
const { encode } = require(require('path').resolve(args[0]));
const texts = JSON.parse(fs.readFileSync(args[1], 'utf-8'));
const PIECE = 4096;
const letter = (c) => (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');

function encodeLong(text) {
  const ids = [];
  let start = 0;
  for (let i = PIECE; i < text.length - 1; i++) {
    if (i - start >= PIECE && text[i] === ' ' && letter(text[i - 1]) && letter(text[i + 1])) {
      for (const id of encode(text.slice(start, i))) ids.push(id);
      start = i;
    }
  }
  for (const id of encode(text.slice(start))) ids.push(id);
  return ids;
}

const t0 = process.hrtime.bigint();
const ids = texts.map(encodeLong);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
fs.writeFileSync(args[2], JSON.stringify(time ? [seconds, ids.reduce((n, x) => n + x.length, 0)]
                                              : ids));

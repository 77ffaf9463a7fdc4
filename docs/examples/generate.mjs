// Calls wavenet.v1.WaveNet from Node.js (v18+) with nothing but its built-in modules: gRPC is HTTP/2 plus a small
// framing, and the messages involved are simple enough to encode and decode by hand. A guide for porting to a
// language without a gRPC library; where there is one, generate a client from protos/wavenet/v1/wavenet.proto
// instead.
//
//   node docs/examples/generate.mjs HOST:PORT OUT.raw [SECONDS]          Generate: free-running audio
//   node docs/examples/generate.mjs HOST:PORT OUT.raw --vocode IN.wav    Synthesize: re-voice a 16-bit WAV
//
// Writes SECONDS (default 1) of free-running audio, or the re-voiced recording (sent as RecordedAudio: the server
// computes the frames), as headerless signed 16-bit little-endian mono samples at the model's sample rate, seed 1.
// Plain-text HTTP/2 only (a server started without TLS). If WAVENET_TOKEN is set, it is sent as
// `authorization: Bearer <token>`.
import http2 from "node:http2";
import { readFileSync, writeFileSync } from "node:fs";

const [address, outPath, modeArg = "1", inPath] = process.argv.slice(2);
if (!address || !outPath || (modeArg === "--vocode" && !inPath)) {
  console.error("usage: node generate.mjs HOST:PORT OUT.raw [SECONDS | --vocode IN.wav]");
  process.exit(2);
}

// grpc-status codes, by number.
const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

// --- Protobuf encoding: a field's key is (field number << 3) | wire type, written as a varint. ---------------
const PCM16 = 1; // AudioEncoding.PCM16

function varint(n) { // unsigned, n < 2^53
  const bytes = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) bytes.push((n % 128) | 0x80);
  bytes.push(n);
  return Buffer.from(bytes);
}

function lengthDelimited(field, bytes) { // wire type 2: bytes, strings and nested messages
  return Buffer.concat([varint((field << 3) | 2), varint(bytes.length), bytes]);
}

function encodeGenerateRequest(seconds, seed, encoding) { // seconds null: none (Synthesize: as long as the input)
  const float = Buffer.alloc(4);
  float.writeFloatLE(seconds ?? 0);
  return Buffer.concat([
    ...(seconds === null ? [] : [varint((3 << 3) | 5), float]), // seconds = 3: float, wire type 5 (32-bit LE)
    varint((6 << 3) | 0), varint(seed),     // seed = 6: uint64, wire type 0 (varint)
    varint((7 << 3) | 0), varint(encoding), // encoding = 7: enum, wire type 0
  ]);
}

// SynthesizeRequest is a oneof: config = 1 (a GenerateRequest), end = 3 (EndOfInput, empty), audio = 4.
const configMessage = (generateRequest) => lengthDelimited(1, generateRequest);
const endMessage = () => lengthDelimited(3, Buffer.alloc(0));

function audioMessage(pcm, sampleRate, channels) { // RecordedAudio: encoding 1, sample_rate 2, channels 3, data 4
  return lengthDelimited(4, Buffer.concat([
    varint((1 << 3) | 0), varint(PCM16),
    varint((2 << 3) | 0), varint(sampleRate),
    varint((3 << 3) | 0), varint(channels),
    lengthDelimited(4, pcm), // loudness = 5 left unset: NORMALISED, as training scaled its clips
  ]));
}

// --- A 16-bit PCM WAV file: RIFF chunks, of which "fmt " says the format and "data" holds the samples. ----------
function readWav(path) {
  const buf = readFileSync(path);
  if (buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE") {
    fail(`${path}: not a WAV file`);
  }
  let format = null;
  for (let pos = 12; pos + 8 <= buf.length; pos += 8 + buf.readUInt32LE(pos + 4) + (buf.readUInt32LE(pos + 4) % 2)) {
    const id = buf.toString("ascii", pos, pos + 4);
    const body = buf.subarray(pos + 8, pos + 8 + buf.readUInt32LE(pos + 4));
    if (id === "fmt ") format = { tag: body.readUInt16LE(0), channels: body.readUInt16LE(2),
      sampleRate: body.readUInt32LE(4), bits: body.readUInt16LE(14) };
    else if (id === "data") {
      if (!format || format.tag !== 1 || format.bits !== 16) fail(`${path}: only 16-bit PCM WAV is read here`);
      return { ...format, pcm: body };
    }
  }
  fail(`${path}: no data chunk`);
}

// --- Protobuf decoding: yields [field number, wire type, value] for each field of a message. -----------------
// Varints come back as BigInt (uint64 may exceed 2^53), the other wire types as the Buffer of their bytes.
function* fields(buf) {
  let pos = 0;
  const readVarint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= buf.length) throw new Error("truncated varint");
      const byte = buf[pos++];
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  const take = (n) => {
    if (pos + n > buf.length) throw new Error("truncated field");
    return buf.subarray(pos, (pos += n));
  };
  while (pos < buf.length) {
    const key = Number(readVarint());
    const [field, wireType] = [key >>> 3, key & 7];
    if (wireType === 0) yield [field, wireType, readVarint()];
    else if (wireType === 1) yield [field, wireType, take(8)];                    // fixed64, double
    else if (wireType === 2) yield [field, wireType, take(Number(readVarint()))]; // bytes, string, message
    else if (wireType === 5) yield [field, wireType, take(4)];                    // fixed32, float
    else throw new Error(`unsupported wire type ${wireType}`);
  }
}

function decodeSummary(buf) {
  const summary = { samples: 0n, realTimeFactor: 0, seed: 0n, requestId: "" };
  for (const [field, , value] of fields(buf)) { // fields not named here (wall_seconds, ...) are skipped
    if (field === 1) summary.samples = value;
    else if (field === 3) summary.realTimeFactor = value.readDoubleLE(0);
    else if (field === 5) summary.seed = value;
    else if (field === 6) summary.requestId = value.toString("utf8");
  }
  return summary;
}

function decodeAudioChunk(buf) { // sequence 1, first_sample 2, num_samples 3, encoding 4, audio 5, summary 6
  const chunk = { audio: Buffer.alloc(0), summary: null };
  for (const [field, , value] of fields(buf)) {
    if (field === 5) chunk.audio = value;
    else if (field === 6) chunk.summary = decodeSummary(value);
  }
  return chunk;
}

// --- gRPC over HTTP/2: each message is framed as [compressed flag: 1 byte][length: 4 bytes big-endian][bytes]. -
function frame(message) {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1); // byte 0 stays 0: not compressed
  return Buffer.concat([header, message]);
}

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}

const connection = http2.connect(`http://${address}`);
connection.on("error", (err) => fail(`${address}: ${err.message}`));

const headers = { ":method": "POST", "content-type": "application/grpc", "te": "trailers" };
if (process.env.WAVENET_TOKEN) headers.authorization = `Bearer ${process.env.WAVENET_TOKEN}`;
const vocoding = modeArg === "--vocode";
headers[":path"] = vocoding ? "/wavenet.v1.WaveNet/Synthesize" : "/wavenet.v1.WaveNet/Generate";
const call = connection.request(headers);
if (!vocoding) {
  call.end(frame(encodeGenerateRequest(Number(modeArg), 1, PCM16))); // unary request: one message, then done
} else { // a stream of requests: the config, the audio in blocks of whole samples (each within the 4 MB message
  // limit), the end; then the call's half-close
  const wav = readWav(inPath);
  call.write(frame(configMessage(encodeGenerateRequest(null, 1, PCM16))));
  const block = 2 * wav.channels * 32768;
  for (let i = 0; i < wav.pcm.length; i += block) {
    call.write(frame(audioMessage(wav.pcm.subarray(i, i + block), wav.sampleRate, wav.channels)));
  }
  call.end(frame(endMessage()));
}

let status = null; // grpc-status and grpc-message come in the trailers, or in the headers when no message came
let pending = Buffer.alloc(0); // received bytes not yet making up a whole message
const audio = [];
let summary = null;
const takeStatus = (h) => { if (h["grpc-status"] !== undefined) status = h; };
call.on("response", (h) => {
  if (h[":status"] !== 200) fail(`HTTP status ${h[":status"]}`);
  takeStatus(h);
});
call.on("trailers", takeStatus);
call.on("data", (data) => {
  pending = Buffer.concat([pending, data]);
  while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
    if (pending[0] !== 0) fail("the server sent a compressed message");
    const chunk = decodeAudioChunk(pending.subarray(5, 5 + pending.readUInt32BE(1)));
    pending = pending.subarray(5 + pending.readUInt32BE(1));
    audio.push(chunk.audio);
    if (chunk.summary) summary = chunk.summary; // set on the last chunk only
  }
});
call.on("error", (err) => fail(err.message));
call.on("close", () => {
  connection.close();
  if (status === null) fail("the call ended without a grpc-status");
  const code = Number(status["grpc-status"]);
  if (code !== 0) {
    let message = status["grpc-message"] ?? "";
    try { message = decodeURIComponent(message); } catch { /* not validly percent-encoded: print as is */ }
    fail(`${CODES[code] ?? code}: ${message}`);
  }
  const pcm = Buffer.concat(audio);
  writeFileSync(outPath, pcm);
  const samples = summary ? summary.samples : BigInt(pcm.length / 2);
  const rtf = summary ? summary.realTimeFactor.toFixed(2) : "?";
  console.log(`wrote ${samples} samples to ${outPath} (seed ${summary?.seed ?? "?"}, real-time factor ${rtf})`);
});

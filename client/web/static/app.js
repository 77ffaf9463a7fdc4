// The wavenet-stream playground: models from /api/models, one call per WebSocket to /ws (protocol in
// client/web/app.py), audio played as it arrives through Web Audio, scheduled back to back with no gaps.
"use strict";

const $ = (id) => document.getElementById(id);
const BLOCK_SECONDS = 0.5; // audio per WebSocket message when re-voicing

// What the page is doing, for people (the status line) and for tests (window.playground, body[data-state]):
// loading, ready, streaming, played, error.
const playground = { state: "loading", samples: 0, sampleRate: 0, summary: null, error: null, gaps: 0 };
window.playground = playground;
let models = [];
let input = null; // the recording to re-voice: { samples: Float32Array (interleaved), rate, channels, seconds, name }

function setState(state, text) {
  playground.state = state;
  document.body.dataset.state = state;
  if (text !== undefined) $("status").textContent = text;
}

function showError(text) {
  playground.error = text;
  $("error").textContent = text;
  $("error").hidden = false;
  setState("error", "");
}

function clearError() {
  playground.error = null;
  $("error").hidden = true;
}

// --- models ----------------------------------------------------------------------------------------------------
async function loadModels() {
  try {
    const response = await fetch("api/models");
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    models = body.models;
    $("server").textContent = `server ${body.server}`;
    $("model").replaceChildren(...models.map((m) => new Option(`${m.name} (${m.sample_rate} Hz)`, m.name)));
    chooseModel();
    setState("ready", "ready");
  } catch (err) {
    showError(`cannot list the server's models: ${err.message}`);
  }
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

function chooseModel() {
  const model = currentModel();
  const speakers = model.speakers.length ? model.speakers : ["(one voice)"];
  $("speaker").replaceChildren(...speakers.map((name, i) => new Option(`${i}: ${name}`, String(i))));
  $("temperature").value = model.default_temperature;
  $("generate").disabled = !model.free_running;
  $("vocode").disabled = !model.vocoder || input === null;
}

function callOptions() {
  const model = currentModel();
  return {
    model: model.name,
    speaker: model.speakers.length ? Number($("speaker").value) : null,
    temperature: $("temperature").value === "" ? null : Number($("temperature").value),
    seed: $("seed").value === "" ? null : Number($("seed").value),
  };
}

// --- playback, gap-free: each chunk starts where the one before ends ------------------------------------------
class Player {
  constructor(rate) {
    this.ctx = new AudioContext({ sampleRate: rate });
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 512;
    this.analyser.connect(this.ctx.destination);
    this.next = 0; // when the next chunk starts, in the context's time
    this.scheduled = 0;
    this.ended = 0;
    this.onAllEnded = null;
  }

  play(samples) {
    const buffer = this.ctx.createBuffer(1, samples.length, this.ctx.sampleRate);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.analyser);
    const now = this.ctx.currentTime;
    if (this.next < now + 0.01) { // the first chunk, or one that came after the one before had ended
      if (this.scheduled > 0) playground.gaps += 1;
      this.next = now + 0.05;
    }
    source.onended = () => {
      this.ended += 1;
      if (this.onAllEnded && this.ended === this.scheduled) this.onAllEnded();
    };
    source.start(this.next);
    this.next += buffer.duration;
    this.scheduled += 1;
  }

  whenAllEnded(callback) {
    if (this.ended === this.scheduled) callback();
    else this.onAllEnded = callback;
  }
}

// --- drawing ---------------------------------------------------------------------------------------------------
function drawWaveform(chunks, expected) {
  const canvas = $("waveform");
  const g = canvas.getContext("2d");
  const total = Math.max(expected, chunks.reduce((n, c) => n + c.length, 0), 1);
  g.fillStyle = "#111";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#6cf";
  const perPixel = total / canvas.width;
  let x = 0, lo = 0, hi = 0, count = 0;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++) {
      lo = Math.min(lo, chunk[i]);
      hi = Math.max(hi, chunk[i]);
      if (++count >= perPixel) {
        const mid = canvas.height / 2;
        g.fillRect(x, mid - hi * mid, 1, Math.max(1, (hi - lo) * mid));
        x += 1; lo = 0; hi = 0; count = 0;
      }
    }
  }
}

function drawSpectrogram(player) {
  const canvas = $("spectrogram");
  const g = canvas.getContext("2d");
  const bins = new Uint8Array(player.analyser.frequencyBinCount);
  const step = () => {
    player.analyser.getByteFrequencyData(bins);
    g.drawImage(canvas, -2, 0); // scroll left
    for (let y = 0; y < canvas.height; y++) {
      const v = bins[Math.floor((1 - y / canvas.height) * (bins.length - 1))];
      g.fillStyle = `rgb(${v},${Math.max(0, 2 * v - 255)},${Math.floor(v / 4)})`;
      g.fillRect(canvas.width - 2, y, 2, 1);
    }
    if (playground.state === "streaming") requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

// --- one call --------------------------------------------------------------------------------------------------
function wavBlob(chunks, rate) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const v of chunk) {
      view.setInt16(offset, Math.max(-32768, Math.min(32767, Math.round(v * 32768))), true);
      offset += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

const FRIENDLY = {
  RESOURCE_EXHAUSTED: "the server is busy (every stream in use): try again in a moment",
  UNAVAILABLE: "the server cannot be reached or is shutting down",
};

function startCall(request, expectedSamples, send) {
  clearError();
  const model = currentModel();
  const player = new Player(model.sample_rate);
  const chunks = [];
  const started = performance.now();
  let firstAudio = null, finished = false;
  Object.assign(playground, { samples: 0, sampleRate: model.sample_rate, summary: null, gaps: 0 });
  for (const id of ["ttfa", "rtf", "received", "used-seed"]) $(id).textContent = "–";
  $("download").hidden = true;
  setState("streaming", `${request.method === "generate" ? "generating" : "re-voicing"}…`);
  drawSpectrogram(player);

  const socket = new WebSocket(new URL("ws", location.href).href.replace(/^http/, "ws"));
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    socket.send(JSON.stringify(request));
    send(socket);
  };
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) {
      const samples = new Float32Array(event.data);
      if (firstAudio === null) {
        firstAudio = performance.now() - started;
        $("ttfa").textContent = `${firstAudio.toFixed(0)} ms`;
      }
      chunks.push(samples);
      playground.samples += samples.length;
      $("received").textContent = `${(playground.samples / model.sample_rate).toFixed(2)} s`;
      player.play(samples);
      drawWaveform(chunks, expectedSamples);
      return;
    }
    const message = JSON.parse(event.data);
    finished = true;
    if (message.type === "error") {
      showError(`${message.code}: ${FRIENDLY[message.code] ? FRIENDLY[message.code] + " — " : ""}${message.message}`);
      return;
    }
    playground.summary = message;
    $("rtf").textContent = `${message.real_time_factor.toFixed(2)}× (server)`;
    $("used-seed").textContent = message.seed;
    const url = URL.createObjectURL(wavBlob(chunks, model.sample_rate));
    $("result").src = url;
    $("download").href = url;
    $("download").hidden = false;
    setState("streaming", "playing…");
    player.whenAllEnded(() => setState("played", `played ${(playground.samples / model.sample_rate).toFixed(2)} s`));
  };
  socket.onclose = () => {
    if (!finished) showError("the connection to the playground closed before the call finished");
  };
  socket.onerror = () => {
    if (!finished) showError("the connection to the playground failed");
  };
}

function generate() {
  const seconds = Number($("seconds").value);
  const request = { method: "generate", seconds, ...callOptions() };
  startCall(request, seconds * currentModel().sample_rate, () => {});
}

function vocode() {
  const request = { method: "vocode", sample_rate: input.rate, channels: input.channels, ...callOptions() };
  const block = Math.round(BLOCK_SECONDS * input.rate) * input.channels;
  startCall(request, input.seconds * currentModel().sample_rate, (socket) => {
    for (let i = 0; i < input.samples.length; i += block) socket.send(input.samples.slice(i, i + block).buffer);
    socket.send(JSON.stringify({ end: true }));
  });
}

// --- the recording to re-voice: a file, or the microphone --------------------------------------------------------
async function useRecording(blob, name) {
  clearError();
  input = null;
  $("vocode").disabled = true;
  try {
    const decoded = await new AudioContext().decodeAudioData(await blob.arrayBuffer());
    const channels = decoded.numberOfChannels;
    const samples = new Float32Array(decoded.length * channels);
    for (let c = 0; c < channels; c++) {
      const data = decoded.getChannelData(c);
      for (let i = 0; i < data.length; i++) samples[i * channels + c] = data[i];
    }
    input = { samples, rate: decoded.sampleRate, channels, seconds: decoded.duration, name };
    $("original").src = URL.createObjectURL(blob);
    $("vocode").disabled = !currentModel().vocoder;
    setState("ready", `${name}: ${decoded.duration.toFixed(2)} s, ${channels} channel(s), ${decoded.sampleRate} Hz`);
  } catch (err) {
    showError(`${name}: not audio this browser can decode (${err.message || err})`);
  }
}

let recorder = null;
async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => parts.push(event.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("record").textContent = "Record";
      useRecording(new Blob(parts, { type: parts[0]?.type }), "microphone");
    };
    recorder.start();
    $("record").textContent = "Stop";
    setState("ready", "recording… (Stop when done)");
  } catch (err) {
    showError(`cannot record from the microphone: ${err.message || err}`);
  }
}

$("model").addEventListener("change", chooseModel);
$("generate").addEventListener("click", generate);
$("vocode").addEventListener("click", vocode);
$("record").addEventListener("click", toggleRecording);
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) useRecording(file, file.name);
});
loadModels();

// The audio thread's half of the captions page: the microphone's samples (at the AudioContext's own
// rate, usually 48 kHz) mixed to mono, low-pass filtered and resampled to 16 kHz, sent to the page as
// 16-bit PCM in 50 ms buffers, with the level (RMS) of each buffer for the meter.

const OUT_RATE = 16000;
const CHUNK_SAMPLES = 800; // 50 ms at 16 kHz: small enough for prompt partials, few enough messages

// A windowed-sinc low-pass below the output's Nyquist frequency, so that downsampling does not fold
// the upper band back onto speech.
function lowPass(ratio) {
  const half = 16 * Math.ceil(ratio);
  const cutoff = 0.45 / ratio; // cycles per input sample: 7.2 kHz at 16 kHz out
  const taps = new Float32Array(2 * half + 1);
  let sum = 0;
  for (let i = -half; i <= half; i++) {
    const sinc = i === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * i) / (Math.PI * i);
    const window = 0.54 + 0.46 * Math.cos(Math.PI * i / half); // Hamming
    taps[i + half] = sinc * window;
    sum += taps[i + half];
  }
  return taps.map((t) => t / sum); // unity gain at 0 Hz
}

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample
    this.taps = this.ratio > 1 ? lowPass(this.ratio) : new Float32Array([1]);
    this.history = new Float32Array(this.taps.length + 256); // the last taps.length inputs, then the new ones
    this.held = this.taps.length - 1; // inputs in history (starts as silence)
    this.position = this.taps.length - 1; // where the next output falls, in history's samples
    this.out = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
    this.energy = 0;
  }

  filtered(index) {
    // The low-passed input at history[index], from the taps.length inputs that end there.
    const taps = this.taps;
    let acc = 0;
    for (let k = 0, i = index - taps.length + 1; k < taps.length; k++, i++) acc += taps[k] * this.history[i];
    return acc;
  }

  push(mono) {
    if (this.held + mono.length > this.history.length) {
      const bigger = new Float32Array(this.held + mono.length + 256);
      bigger.set(this.history.subarray(0, this.held));
      this.history = bigger;
    }
    this.history.set(mono, this.held);
    this.held += mono.length;
    while (this.position + 1 < this.held) {
      const at = Math.floor(this.position);
      const frac = this.position - at;
      const value = (1 - frac) * this.filtered(at) + frac * this.filtered(at + 1); // linear between the two
      this.emit(value);
      this.position += this.ratio;
    }
    // Keep the inputs the filter still needs; positions move with them.
    const keep = this.taps.length;
    const drop = Math.max(0, Math.min(Math.floor(this.position) - keep + 1, this.held - keep));
    if (drop > 0) {
      this.history.copyWithin(0, drop, this.held);
      this.held -= drop;
      this.position -= drop;
    }
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.out[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.energy += clipped * clipped;
    if (this.filled === CHUNK_SAMPLES) {
      const rms = Math.sqrt(this.energy / CHUNK_SAMPLES);
      this.port.postMessage({ pcm: this.out.buffer, rms }, [this.out.buffer]); // handed over, not copied
      this.out = new Int16Array(CHUNK_SAMPLES);
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const mono = new Float32Array(channels[0].length);
      for (const channel of channels) for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
      this.push(mono);
    }
    return true; // keep running while the page holds the node
  }
}

registerProcessor("pcm16k", Pcm16kProcessor);

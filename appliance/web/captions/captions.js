// The live-captions page: the chosen microphone → an AudioWorklet (pcm-worklet.js: mono, 16 kHz,
// 16-bit) → a WebSocket to this server's /v1/listen (Deepgram's live protocol) → partials shown in
// place, finals as lines. The same host and port serve this page and the stream, so an https page
// opens wss:// (browsers grant the microphone only to https pages and localhost).

const QUERY = new URLSearchParams({
  encoding: "linear16", sample_rate: "16000", channels: "1", interim_results: "true", vad_events: "true",
  utterance_end_ms: "1000", punctuate: "true",
});
const QUEUE_LIMIT = 40; // 50 ms chunks held while the socket opens (2 s); older ones are dropped
const CLOSE_WAIT_MS = 5000; // after CloseStream, how long the last final and Metadata may take
const CLOSE_WORDS = {
  1000: "the stream ended",
  1001: "the server is going away (restarting or draining)",
  1006: "the connection was lost",
  1007: "the server could not read what was sent",
  1008: "the server refused the stream",
  1009: "a message was larger than the server takes",
  1011: "the server failed on this stream",
  1013: "the server is busy; try again in a moment",
};
const BEFORE_OPEN = "the server refused the stream before it opened, or could not be reached (a missing or " +
  "wrong API key, no free connection, or a certificate this browser does not trust; browsers do not say which)";

const $ = (id) => document.getElementById(id);
let run = null; // the running capture: {socket, stream, context, queue, opened, stopping}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function setCue(state) {
  $("speech").dataset.state = state;
  $("speech").textContent = state;
}

function setLevel(rms) {
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const share = Math.max(0, Math.min(1, (db + 60) / 60)); // -60 dBFS .. 0 dBFS
  $("level-bar").style.width = `${(share * 100).toFixed(0)}%`;
}

function addFinal(text) {
  const line = document.createElement("p");
  line.textContent = text; // never innerHTML: a transcript is text
  $("finals").append(line);
  line.scrollIntoView({ block: "end" });
}

async function listMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const select = $("mic");
  const chosen = select.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.replaceChildren(new Option("default", ""));
  devices.forEach((device, i) => {
    if (device.deviceId && device.deviceId !== "default") {
      select.append(new Option(device.label || `microphone ${i + 1}`, device.deviceId));
    }
  });
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function micError(err) {
  const words = {
    NotAllowedError: "the microphone was not allowed (the browser or the person said no)",
    NotFoundError: "no microphone was found",
    NotReadableError: "the microphone is in use by another program or could not be opened",
    OverconstrainedError: "the chosen microphone is not available any more",
    SecurityError: "the microphone needs an https page (or localhost)",
  };
  return words[err.name] || `the microphone could not be opened: ${err.message}`;
}

function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/listen?${QUERY}`;
}

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return; // the server sends JSON only; anything else is ignored
  }
  switch (message.type) {
    case "Results": {
      const text = message.channel?.alternatives?.[0]?.transcript ?? "";
      if (message.is_final) {
        if (text.trim()) addFinal(text.trim());
        $("partial").textContent = "";
      } else {
        $("partial").textContent = text;
      }
      if (message.speech_final) setCue("pause");
      break;
    }
    case "SpeechStarted":
      setCue("speech");
      break;
    case "UtteranceEnd":
      setCue("pause");
      break;
    case "Metadata":
      setStatus(`stream closed: ${Number(message.duration || 0).toFixed(1)} s of audio`);
      break;
    case "Error":
      showError(message.description || message.message || "the server reported an error");
      break;
    default:
      break;
  }
}

async function whyRefused(key) {
  // A browser cannot read a refused upgrade's {code, message}; the same URL asked without an upgrade
  // may say it. Anything else (no such page, no JSON) leaves the general words.
  try {
    const answer = await fetch(`/v1/listen?${QUERY}`, { headers: key ? { Authorization: `Token ${key}` } : {} });
    const body = await answer.json();
    if (body.code && body.code !== "ERR1018") return `${body.code}: ${body.message}`;
  } catch {
    // unreachable, or not JSON
  }
  return null;
}

function onClose(current, event) {
  const expected = current.stopping && event.code === 1000;
  if (!current.opened) {
    showError(BEFORE_OPEN);
    whyRefused(current.key).then((reason) => reason && showError(`the server refused the stream: ${reason}`));
  } else if (!expected) {
    const words = CLOSE_WORDS[event.code] || `the connection closed (code ${event.code})`;
    showError(event.reason ? `${words}: ${event.reason}` : words); // the reason starts with the ERR code
  }
  if (!$("status").textContent.startsWith("stream closed")) setStatus("stopped");
  release(current);
}

function release(current) {
  current.stream?.getTracks().forEach((track) => track.stop());
  current.context?.close().catch(() => {});
  if (run === current) run = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  $("mic").disabled = false;
  setLevel(0);
  setCue("idle");
}

function openSocket(current, key) {
  // Browsers cannot set headers on a WebSocket: the key goes as the `token, <key>` subprotocol pair.
  const socket = new WebSocket(streamUrl(), key ? ["token", key] : []);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    current.opened = true;
    setStatus("streaming");
    current.queue.splice(0).forEach((chunk) => socket.send(chunk));
  };
  socket.onmessage = onMessage;
  socket.onclose = (event) => onClose(current, event);
  return socket;
}

async function start(event) {
  event.preventDefault();
  if (run) return;
  clearError();
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showError("this page needs https (or localhost) for the microphone; ask the operator for the https address");
    return;
  }
  const current = { queue: [], opened: false, stopping: false, key: $("key").value.trim() };
  run = current;
  $("start").disabled = true;
  $("mic").disabled = true;
  setStatus("opening the microphone");
  try {
    const deviceId = $("mic").value;
    current.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        deviceId: deviceId ? { exact: deviceId } : undefined, channelCount: 1,
        echoCancellation: false, noiseSuppression: false, autoGainControl: false,
      },
    });
    current.context = new AudioContext();
    await current.context.audioWorklet.addModule("pcm-worklet.js");
  } catch (err) {
    showError(micError(err));
    setStatus("stopped");
    release(current);
    return;
  }
  listMicrophones(); // labels are readable now that the microphone is allowed
  try {
    current.socket = openSocket(current, current.key);
  } catch (err) { // a key with characters a subprotocol cannot carry
    showError(`the API key cannot be sent over a WebSocket (${err.message})`);
    setStatus("stopped");
    release(current);
    return;
  }
  // No outputs: the node is pulled by the graph without being connected to the speakers.
  const node = new AudioWorkletNode(current.context, "pcm16k", { numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    setLevel(data.rms);
    if (current.socket.readyState === WebSocket.OPEN) {
      current.socket.send(data.pcm);
    } else if (!current.opened) {
      current.queue.push(data.pcm);
      if (current.queue.length > QUEUE_LIMIT) current.queue.shift();
    }
  };
  current.context.createMediaStreamSource(current.stream).connect(node);
  $("stop").disabled = false;
  setStatus("connecting");
}

function stop() {
  const current = run;
  if (!current) return;
  current.stopping = true;
  current.stream?.getTracks().forEach((track) => track.stop());
  if (current.socket?.readyState === WebSocket.OPEN) {
    setStatus("finishing the last words");
    current.socket.send(JSON.stringify({ type: "CloseStream" })); // the server flushes, sends Metadata, closes
    setTimeout(() => current.socket.readyState !== WebSocket.CLOSED && current.socket.close(), CLOSE_WAIT_MS);
  } else {
    current.socket?.close();
    release(current);
  }
}

$("controls").addEventListener("submit", start);
$("stop").addEventListener("click", stop);
navigator.mediaDevices?.addEventListener?.("devicechange", listMicrophones);
listMicrophones().catch(() => {});

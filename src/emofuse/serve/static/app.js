// The emofuse page: upload or record a clip, POST it to /v1/predict, show the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let recorder = null;
let clock = null;

// RdBu-like diverging colour: positive contributions red, negative blue, zero white
function colour(value, span) {
  const t = Math.max(-1, Math.min(1, span > 0 ? value / span : 0));
  const end = t >= 0 ? [178, 24, 43] : [33, 102, 172];
  const a = Math.abs(t);
  const mix = end.map((c) => Math.round(255 + (c - 255) * a));
  return `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
}

function signed(x, digits = 3) {
  return (x >= 0 ? "+" : "") + x.toFixed(digits);
}

function showError(status, body) {
  const e = body && body.error ? body.error : { reason: "error", message: String(body) };
  $("error").textContent = `Error ${status} (${e.reason}): ${e.message}`;
  $("error").hidden = false;
}

function busy(on, text) {
  $("progress-box").hidden = !on;
  $("record-start").disabled = on;
  $("file").disabled = on;
  if (text) $("status").textContent = text;
  if (!on && clock) { clearInterval(clock); clock = null; }
}

function send(blob, name) {
  $("error").hidden = true;
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", blob, name);
  const transcript = $("transcript").value.trim();
  if (transcript) form.append("transcript", transcript);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/predict");
  xhr.responseType = "json";
  const bar = $("progress");
  bar.value = 0;
  busy(true, `uploading ${name}…`);
  xhr.upload.onprogress = (ev) => {
    if (ev.lengthComputable) bar.value = (100 * ev.loaded) / ev.total;
  };
  xhr.upload.onload = () => {
    bar.removeAttribute("value"); // indeterminate while the server works
    const started = Date.now();
    const tick = () => {
      $("status").textContent = `extracting words, voice and face, then scoring… ${Math.round((Date.now() - started) / 1000)} s`;
    };
    tick();
    clock = setInterval(tick, 500);
  };
  xhr.onload = () => {
    busy(false);
    if (xhr.status === 200) show(xhr.response);
    else {
      const retry = xhr.getResponseHeader("Retry-After");
      showError(xhr.status, xhr.response || xhr.statusText);
      if (retry) $("error").textContent += ` (retry in ${retry} s)`;
    }
  };
  xhr.onerror = () => { busy(false); showError(0, "the server did not answer"); };
  xhr.send(form);
}

function row(table, cells) {
  const tr = table.insertRow();
  for (const c of cells) {
    const td = tr.insertCell();
    if (c instanceof Node) { td.className = "bar"; td.appendChild(c); } else td.textContent = c;
  }
}

function bar(value, span) {
  const box = document.createElement("div");
  const fill = document.createElement("div");
  const mid = document.createElement("div");
  fill.className = "barfill";
  mid.className = "barmid";
  const w = span > 0 ? (50 * Math.min(1, Math.abs(value) / span)) : 0;
  fill.style.left = value >= 0 ? "50%" : `${50 - w}%`;
  fill.style.width = `${w}%`;
  fill.style.background = colour(value, span);
  box.append(fill, mid);
  return box;
}

function show(r) {
  $("clip-name").textContent = r.clip;
  const labels = $("labels");
  const mods = $("modalities");
  labels.innerHTML = "";
  mods.innerHTML = "";
  if ("score" in r) {
    $("score").textContent = signed(r.score, 2);
    $("score-caption").textContent = "sentiment score (-3 … +3)";
    row(labels, ["2 classes", r.labels["2"]]);
    row(labels, ["3 classes", r.labels["3"]]);
    row(labels, ["7 classes", `${r.labels["7"]} (${r.labels["7_value"]})`]);
  } else {
    $("score").textContent = r.class;
    $("score-caption").textContent = `class, p = ${r.probability.toFixed(2)}`;
    for (const [name, p] of Object.entries(r.probabilities)) row(labels, [name, p.toFixed(3)]);
  }
  const contrib = Object.entries(r.contributions);
  const mspan = Math.max(1e-6, ...contrib.map(([, c]) => Math.abs(c.contribution)));
  row(mods, ["modality", "removed: change", ""]);
  for (const [m, c] of contrib) row(mods, [m, signed(c.contribution), bar(c.contribution, mspan)]);

  const words = r.word_contributions || r.words.map((w) => ({ word: w.word, contribution: 0 }));
  const duration = Math.max(r.duration || 0, ...r.words.map((w) => w.end), 0.1);
  const span = Math.max(1e-6, ...words.map((w) => Math.abs(w.contribution)));
  const timeline = $("timeline");
  timeline.innerHTML = "";
  r.words.slice(0, words.length).forEach((w, i) => {
    const c = words[i].contribution;
    const div = document.createElement("div");
    div.className = "word";
    div.style.left = `${(100 * w.start) / duration}%`;
    div.style.width = `${Math.max(1.5, (100 * (w.end - w.start)) / duration)}%`;
    div.style.background = colour(c, span);
    div.style.color = Math.abs(c) / span > 0.6 ? "#fff" : "#111";
    div.textContent = w.word;
    div.title = `${w.word}  ${w.start.toFixed(2)}–${w.end.toFixed(2)} s  contribution ${signed(c, 4)}`;
    div.dataset.contribution = String(c);
    timeline.appendChild(div);
  });
  const axis = $("axis");
  axis.innerHTML = "";
  const step = duration > 8 ? 2 : duration > 3 ? 0.5 : 0.25;
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const s = document.createElement("span");
    s.style.left = `${(100 * t) / duration}%`;
    s.textContent = `${t.toFixed(step < 1 ? 2 : 0)} s`;
    axis.appendChild(s);
  }
  const t = r.timings || {};
  $("timings").textContent = `words from ${r.word_source || "?"}; time per stage: ` +
    Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(", ");
  const img = $("explain");
  if (r.explain_url) { img.src = r.explain_url; img.hidden = false; } else img.hidden = true;
  $("result").hidden = false;
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) send(f, f.name);
});

$("record-start").addEventListener("click", async () => {
  $("error").hidden = true;
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError(0, "this browser cannot record (no MediaRecorder); choose a file instead");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (err) {
    showError(0, `no camera or microphone: ${err.message}`);
    return;
  }
  const preview = $("preview");
  preview.srcObject = stream;
  preview.hidden = false;
  preview.play();
  const type = ["video/webm;codecs=vp8,opus", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t)) || "";
  recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  recorder.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    preview.hidden = true;
    send(new Blob(chunks, { type: "video/webm" }), "recording.webm");
  };
  recorder.start();
  $("record-start").disabled = true;
  $("record-stop").disabled = false;
});

$("record-stop").addEventListener("click", () => {
  $("record-stop").disabled = true;
  if (recorder && recorder.state !== "inactive") recorder.stop();
});

fetch("/v1/model").then((r) => r.json()).then((m) => {
  const test = m.test_metrics || {};
  const known = ["acc2_non0", "acc2", "mae", "corr", "accuracy", "f1_macro"].filter((k) => k in test);
  // an undefined metric (the correlation of a one-clip test split) comes as null
  const metrics = known.map((k) => `${k} ${test[k] === null ? "n/a" : Number(test[k]).toFixed(3)}`).join(", ");
  $("model-line").textContent = `${m.model} on ${m.modalities} (${m.task}, ${m.features} features)` +
    (metrics ? `; test split: ${metrics}` : "");
}).catch(() => { $("model-line").textContent = "model description unavailable"; });

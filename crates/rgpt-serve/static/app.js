// The page `rgpt serve` shows at `/`: an image, regions drawn on it (box,
// polygon, free-hand mask), and a chat with the server's OpenAI-compatible
// API that streams answers. Regions go to the API in the order of the
// `<region>` placeholders of the whole conversation, in image pixels.
"use strict";

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
                "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000"];
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const state = {
  model: null,
  image: null,        // {url, element, width, height}
  scale: 1,           // canvas pixels per image pixel
  tool: "box",
  regions: [],        // {id, kind, color, box | points | mask}
  nextId: 1,
  drawing: null,      // the region being drawn
  messages: [],       // the conversation as the API takes it (text only)
  sent: [],           // per `<region>` placeholder so far: {id, json}
  highlighted: new Set(),
  busy: false,
  lastRequest: null,
};
window.rgpt = state; // for the browser test and the curious

// ---- the model ---------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (e) {
    $("model").textContent = "cannot list the model: " + e.message;
  }
}
$("api-key").addEventListener("change", loadModel);

// ---- the image ---------------------------------------------------------

function openFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    showError("That is not an image: choose a PNG or JPEG.");
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const element = new Image();
    element.onload = () => {
      state.image = { url: reader.result, element, width: element.naturalWidth, height: element.naturalHeight };
      state.regions = [];
      state.nextId = 1;
      newConversation();
      fit();
      $("drop").classList.add("loaded");
    };
    element.onerror = () => showError("The image does not decode.");
    element.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function fit() {
  if (!state.image) return;
  const room = $("picture").clientWidth - 24;
  state.scale = Math.min(1, room / state.image.width) || 1;
  if (state.image.width * state.scale < 320) state.scale = 320 / state.image.width;
  canvas.width = Math.round(state.image.width * state.scale);
  canvas.height = Math.round(state.image.height * state.scale);
  redraw();
}
window.addEventListener("resize", fit);

$("file").addEventListener("change", (e) => openFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  openFile(e.dataTransfer.files[0]);
});

// ---- drawing -----------------------------------------------------------

const HINTS = {
  box: "Drag to draw a box.",
  polygon: "Click the corners; double-click, click the first corner or press Enter to close; Esc cancels.",
  brush: "Paint over the region; it is sent as a mask.",
};
document.querySelectorAll("#tools [data-tool]").forEach((button) => {
  button.addEventListener("click", () => {
    state.tool = button.dataset.tool;
    state.drawing = null;
    document.querySelectorAll("#tools [data-tool]").forEach((b) =>
      b.setAttribute("aria-pressed", String(b === button)));
    $("tool-hint").textContent = HINTS[state.tool];
    redraw();
  });
});

function imagePoint(event) {
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width) / state.scale;
  const y = (event.clientY - rect.top) * (canvas.height / rect.height) / state.scale;
  return [Math.max(0, Math.min(state.image.width, x)), Math.max(0, Math.min(state.image.height, y))];
}

function color(id) { return COLORS[(id - 1) % COLORS.length]; }

function newRegion(kind) {
  return { id: state.nextId, kind, color: color(state.nextId) };
}

function addRegion(region) {
  state.nextId += 1;
  state.regions.push(region);
  state.drawing = null;
  listRegions();
  redraw();
}

function brushCanvas() {
  const mask = document.createElement("canvas");
  mask.width = state.image.width;
  mask.height = state.image.height;
  const m = mask.getContext("2d");
  m.fillStyle = "#000";
  m.fillRect(0, 0, mask.width, mask.height);
  return mask;
}

function paint(region, [x, y]) {
  const m = region.mask.getContext("2d");
  const r = Number($("brush-size").value) / state.scale / 2;
  m.fillStyle = "#fff";
  m.beginPath();
  if (region.last) {
    // Fill the gap since the last event with a stroke as wide as the brush.
    m.strokeStyle = "#fff";
    m.lineWidth = 2 * r;
    m.lineCap = "round";
    m.moveTo(region.last[0], region.last[1]);
    m.lineTo(x, y);
    m.stroke();
  } else {
    m.arc(x, y, r, 0, 2 * Math.PI);
    m.fill();
  }
  region.last = [x, y];
  region.painted = true;
}

canvas.addEventListener("pointerdown", (e) => {
  if (!state.image || e.button !== 0) return;
  const p = imagePoint(e);
  if (state.tool === "box") {
    state.drawing = Object.assign(newRegion("box"), { start: p, box: [p[0], p[1], p[0], p[1]] });
    canvas.setPointerCapture(e.pointerId);
  } else if (state.tool === "brush") {
    state.drawing = Object.assign(newRegion("mask"), { mask: brushCanvas() });
    paint(state.drawing, p);
    canvas.setPointerCapture(e.pointerId);
  } else {
    if (!state.drawing) state.drawing = Object.assign(newRegion("polygon"), { points: [] });
    const points = state.drawing.points;
    const first = points[0];
    if (points.length >= 3 && Math.hypot(first[0] - p[0], first[1] - p[1]) * state.scale < 8) {
      closePolygon();
      return;
    }
    points.push(p);
  }
  redraw();
});

canvas.addEventListener("pointermove", (e) => {
  const d = state.drawing;
  if (!d || !state.image) return;
  const p = imagePoint(e);
  if (d.kind === "box" && d.start) {
    d.box = [Math.min(d.start[0], p[0]), Math.min(d.start[1], p[1]), Math.max(d.start[0], p[0]), Math.max(d.start[1], p[1])];
  } else if (d.kind === "mask" && e.buttons & 1) {
    paint(d, p);
  } else if (d.kind === "polygon") {
    d.hover = p;
  }
  redraw();
});

canvas.addEventListener("pointerup", () => {
  const d = state.drawing;
  if (!d) return;
  if (d.kind === "box") {
    const [x1, y1, x2, y2] = d.box;
    delete d.start;
    if ((x2 - x1) * state.scale >= 3 && (y2 - y1) * state.scale >= 3) {
      d.box = d.box.map((v) => Math.round(v * 10) / 10);
      addRegion(d);
    } else {
      state.drawing = null;
      redraw();
    }
  } else if (d.kind === "mask" && d.painted) {
    delete d.last;
    addRegion(d);
  }
});

canvas.addEventListener("dblclick", (e) => { e.preventDefault(); closePolygon(); });
document.addEventListener("keydown", (e) => {
  const onPicture = [document.body, drop, canvas].includes(e.target);
  if (state.drawing && state.drawing.kind === "polygon" && onPicture) {
    if (e.key === "Enter") closePolygon();
    if (e.key === "Escape") { state.drawing = null; redraw(); }
  }
});

function closePolygon() {
  const d = state.drawing;
  if (!d || d.kind !== "polygon") return;
  // A double-click adds its position twice: drop repeated corners.
  d.points = d.points.filter((p, i) => i === 0 || Math.hypot(p[0] - d.points[i - 1][0], p[1] - d.points[i - 1][1]) > 0.5);
  delete d.hover;
  if (d.points.length >= 3) {
    d.points = d.points.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    addRegion(d);
  }
}

function regionPath(region, s) {
  ctx.beginPath();
  if (region.kind === "box") {
    const [x1, y1, x2, y2] = region.box;
    ctx.rect(x1 * s, y1 * s, (x2 - x1) * s, (y2 - y1) * s);
  } else if (region.kind === "polygon") {
    const points = region.hover ? region.points.concat([region.hover]) : region.points;
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x * s, y * s) : ctx.moveTo(x * s, y * s)));
    if (!region.hover) ctx.closePath();
  }
}

function anchor(region) {
  if (region.kind === "box") return [region.box[0], region.box[1]];
  if (region.kind === "polygon") {
    return region.points.reduce((a, p) => (p[1] < a[1] || (p[1] === a[1] && p[0] < a[0]) ? p : a));
  }
  return region.anchor || [0, 0];
}

function tinted(region) {
  // The mask in the region's colour where it is white, clear elsewhere.
  const out = document.createElement("canvas");
  out.width = region.mask.width;
  out.height = region.mask.height;
  const o = out.getContext("2d");
  o.drawImage(region.mask, 0, 0);
  const pixels = o.getImageData(0, 0, out.width, out.height);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(region.color.slice(i, i + 2), 16));
  let top = null;
  for (let i = 0; i < pixels.data.length; i += 4) {
    const on = pixels.data[i] > 0;
    pixels.data[i] = r; pixels.data[i + 1] = g; pixels.data[i + 2] = b;
    pixels.data[i + 3] = on ? 255 : 0;
    if (on && !top) top = [(i / 4) % out.width, Math.floor(i / 4 / out.width)];
  }
  o.putImageData(pixels, 0, 0);
  region.anchor = top || [0, 0];
  return out;
}

function redraw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  const s = state.scale;
  ctx.drawImage(state.image.element, 0, 0, canvas.width, canvas.height);
  const all = state.drawing ? state.regions.concat([state.drawing]) : state.regions;
  for (const region of all) {
    const lit = state.highlighted.has(region.id);
    ctx.lineWidth = lit ? 5 : 2;
    ctx.strokeStyle = region.color;
    ctx.fillStyle = region.color + (lit ? "66" : "33");
    if (region.kind === "mask") {
      ctx.globalAlpha = lit ? 0.65 : 0.4;
      ctx.drawImage(tinted(region), 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    } else {
      regionPath(region, s);
      if (region !== state.drawing || region.kind === "box") ctx.fill();
      ctx.stroke();
    }
    if (region !== state.drawing) {
      const [x, y] = anchor(region);
      const label = String(region.id);
      ctx.font = "bold 14px system-ui, sans-serif";
      const w = ctx.measureText(label).width + 10;
      ctx.fillStyle = region.color;
      ctx.fillRect(x * s, y * s, w, 18);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x * s + 5, y * s + 14);
    }
  }
}

// ---- the region list ---------------------------------------------------

function listRegions() {
  const list = $("regions");
  list.replaceChildren();
  for (const region of state.regions) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = region.color;
    swatch.textContent = region.id;
    const kind = document.createElement("span");
    kind.textContent = { box: "box", polygon: "polygon", mask: "free-hand mask" }[region.kind];
    const insert = document.createElement("button");
    insert.type = "button";
    insert.textContent = "Insert <region>";
    insert.setAttribute("aria-label", `Insert region ${region.id} into the message`);
    insert.dataset.insert = region.id;
    insert.addEventListener("click", () => insertRegion(region.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete region ${region.id}`);
    remove.addEventListener("click", () => {
      state.regions = state.regions.filter((r) => r !== region);
      listRegions();
      redraw();
    });
    item.append(swatch, kind, insert, remove);
    list.append(item);
  }
}

function insertRegion(id) {
  const box = $("message");
  const token = `<region:${id}>`;
  const at = box.selectionStart ?? box.value.length;
  box.value = box.value.slice(0, at) + token + box.value.slice(box.selectionEnd ?? at);
  box.focus();
  box.selectionStart = box.selectionEnd = at + token.length;
}

// ---- the conversation --------------------------------------------------

function regionJson(region) {
  if (region.kind === "box") return { box: region.box };
  if (region.kind === "polygon") return { polygon: [region.points.flat()] };
  return { mask_png: region.mask.toDataURL("image/png").split(",")[1] };
}

function bubble(kind, text) {
  const div = document.createElement("div");
  div.className = "message " + kind;
  if (text !== undefined) div.textContent = text;
  $("log").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showError(message) { bubble("error", message); }

/// A user message with each `<region:k>` as a chip in region k's colour.
function userBubble(text) {
  const div = bubble("user");
  for (const part of text.split(/(<region:\d+>)/)) {
    const m = part.match(/^<region:(\d+)>$/);
    if (m) {
      const chip = document.createElement("span");
      chip.className = "region-ref";
      chip.style.background = color(Number(m[1]));
      chip.textContent = `region ${m[1]}`;
      div.append(chip);
    } else {
      div.append(part);
    }
  }
}

/// An answer, with each `Region [k]` linked to the k-th region of the
/// conversation: highlighted on the image.
function renderAnswer(div, text) {
  div.replaceChildren();
  const lit = new Set();
  for (const part of text.split(/(Region \[\d+\])/)) {
    const m = part.match(/^Region \[(\d+)\]$/);
    const target = m && state.sent[Number(m[1]) - 1];
    if (target) {
      const ref = document.createElement("span");
      ref.className = "region-ref";
      ref.tabIndex = 0;
      ref.style.background = color(target.id);
      ref.textContent = part;
      ref.dataset.region = target.id;
      const only = () => { state.highlighted = new Set([target.id]); redraw(); };
      ref.addEventListener("mouseenter", only);
      ref.addEventListener("focus", only);
      div.append(ref);
      lit.add(target.id);
    } else {
      div.append(part);
    }
  }
  state.highlighted = lit;
  redraw();
}

function newConversation() {
  state.messages = [];
  state.sent = [];
  state.highlighted = new Set();
  $("log").replaceChildren();
  redraw();
}
$("new-chat").addEventListener("click", newConversation);

$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("ask").requestSubmit();
  } else if (e.altKey && /^[1-9]$/.test(e.key)) {
    const region = state.regions.find((r) => r.id === Number(e.key));
    if (region) { e.preventDefault(); insertRegion(region.id); }
  }
});

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (state.busy) return;
  const raw = $("message").value.trim();
  if (!raw) return;
  if (!state.image) { showError("Choose an image first."); return; }
  const refs = [...raw.matchAll(/<region:(\d+)>/g)].map((m) => Number(m[1]));
  const missing = refs.filter((id) => !state.regions.some((r) => r.id === id));
  if (missing.length) { showError(`There is no region ${missing.join(", ")}: draw it, or take it out of the message.`); return; }
  const turn = refs.map((id) => ({ id, json: regionJson(state.regions.find((r) => r.id === id)) }));
  const text = raw.replace(/<region:\d+>/g, "<region>");
  const first = state.messages.length === 0;
  const message = first
    ? { role: "user", content: [{ type: "text", text }, { type: "image_url", image_url: { url: state.image.url } }] }
    : { role: "user", content: text };
  const sent = state.sent.concat(turn);
  const request = {
    model: state.model,
    messages: state.messages.concat([message]),
    regions: sent.map((r) => r.json),
    stream: true,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  state.lastRequest = request;
  userBubble(raw);
  $("message").value = "";
  const answer = bubble("assistant streaming");
  state.busy = true;
  $("send").disabled = true;
  let text_so_far = "";
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(request) });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `${response.status} ${response.statusText}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = pending.indexOf("\n\n")) >= 0) {
        const event = pending.slice(0, cut);
        pending = pending.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices[0].delta.content;
          if (delta) { text_so_far += delta; answer.textContent = text_so_far; }
        }
      }
    }
    answer.classList.remove("streaming");
    // This turn's regions count before the answer is read for `Region [k]`.
    state.messages = request.messages.concat([{ role: "assistant", content: text_so_far }]);
    state.sent = sent;
    renderAnswer(answer, text_so_far);
    answer.dataset.done = "true";
  } catch (error) {
    answer.remove();
    showError(error.message);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("message").focus();
  }
});

loadModel();

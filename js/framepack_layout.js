// FramePack one-frame: a live picture of the index layout on the FramePackOneFrameLayout node.
//
// The node's knobs (preset, latent_window_size, target_index, control_index, ...) decide where
// on FramePack's RoPE time axis the one noisy frame and each clean latent sit. This extension
// draws that layout on the node body: the time axis, the noisy target, every 1x clean latent at
// its index (start, further controls, zero post), the 2x and 4x zero groups, and the warnings.
//
// It never re-implements the rules: it posts the widget values and the number of controls to
// POST /framepack/layout_preview (nodes/web_routes.py), which resolves them with the same Python
// code the node runs, and draws the answer. It re-asks whenever a widget or a connection changes.
// What only the pictures can tell (a control or a mask of another size) comes from the node's last
// run: its UI output `framepack_warnings`, shown until the next run or a change of connections.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "FramePackOneFrameLayout";
const CONTROL_LIST_TYPE = "FramePackControlList";
const ROUTE = "/framepack/layout_preview";
const PREVIEW_WIDGET = "framepack_layout_preview";

const COLORS = {
  background: "#17191c",
  axis: "#8a8f98",
  text: "#d8dde3",
  dim: "#7d838c",
  target: "#ff7a45",
  start: "#4cc38a",
  control: "#4f9cff",
  zero: "#6b7078",
  group2x: "#b07cff",
  group4x: "#2bb5b5",
  warning: "#f2c14e",
  error: "#ff5c5c",
};

// ---- the inputs of the preview: widget values and how many controls reach the node ----------

function linkOrigin(node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  if (!input || input.link == null) return null;
  const link = node.graph?.links?.[input.link] ?? node.graph?.links?.get?.(input.link);
  return link ? node.graph.getNodeById(link.origin_id) : null;
}

// The start image is control 0; each FramePackControlList in the chain on `controls` adds one.
// No start image: null, a layout of settings only, which the route resolves as the node does.
function countControls(node) {
  if (!linkOrigin(node, "start") && !linkOrigin(node, "controls")) return null;
  let count = 1;
  let list = linkOrigin(node, "controls");
  const seen = new Set();
  while (list && list.type === CONTROL_LIST_TYPE && !seen.has(list.id)) {
    seen.add(list.id);
    if (linkOrigin(list, "control")) count += 1;
    list = linkOrigin(list, "previous");
  }
  return count;
}

function widgetValues(node) {
  const values = {};
  for (const w of node.widgets ?? []) {
    if (w.name && !w.name.startsWith("framepack_")) values[w.name] = w.value;
  }
  return values;
}

function previewRequest(node) {
  return { widgets: widgetValues(node), num_controls: countControls(node) };
}

// ---- fetching ---------------------------------------------------------------------------------

function scheduleRefresh(node, delay = 120) {
  clearTimeout(node._fpTimer);
  node._fpTimer = setTimeout(() => refresh(node), delay);
}

async function refresh(node) {
  const request = previewRequest(node);
  const key = JSON.stringify(request);
  const state = node.framepackLayout;
  state.requestKey = key;
  state.pending = true;
  let layout = null;
  let error = null;
  if (request.widgets.preset === "from LoRA" && linkOrigin(node, "lora_settings")) {
    error = null;
    state.note = "preset 'from LoRA': the layout comes from the connected LoRA's training settings when the graph runs";
  } else {
    state.note = null;
    try {
      const res = await api.fetchApi(ROUTE, { method: "POST", body: key, headers: { "Content-Type": "application/json" } });
      const body = await res.json();
      if (body.error) error = body.error;
      else layout = body;
    } catch (e) {
      error = `layout preview failed: ${e}`;
    }
  }
  if (state.requestKey !== key) return; // a newer request superseded this one
  Object.assign(state, { pending: false, request, layout, error, drawnKey: key, version: state.version + 1 });
  redraw(node);
}

// After a state change: grow the node if the drawing needs it and repaint. The canvas renderer
// repaints on setDirtyCanvas; the Vue node renderer (Comfy.VueNodes.Enabled in current frontends)
// paints a custom widget on a canvas of its own, and only when the widget's triggerDraw() is called.
function redraw(node) {
  const want = node.computeSize();
  if (node.size[1] < want[1]) node.setSize([node.size[0], want[1]]);
  node.setDirtyCanvas(true, true);
  node.widgets?.find((w) => w.name === PREVIEW_WIDGET)?.triggerDraw?.();
}

// ---- drawing ----------------------------------------------------------------------------------
//
// planDrawing() decides where every rectangle and every piece of text goes (and so the height the
// node needs); drawLayout() only paints that plan. The text boxes of the plan are kept on
// node.framepackLayout.labelBoxes, so the browser test can check that no two labels overlap.

// The frontend's own node text size: the zoom at which the frontend stops drawing text
// (LiteGraph.Canvas.MinFontSizeForLOD / NODE_TEXT_SIZE) then hides this text no sooner than the widgets'.
const FONT_PX = 14;
const FONT = `${FONT_PX}px sans-serif`;
const LINE = FONT_PX + 5;
const PAD = 10;
const ROWS = [["noisy", 22], ["1x", 22], ["2x", 17], ["4x", 17]]; // each at least one text line tall
const LEGEND = "T noisy target  S start  C# control  P zero post  white edge: mask applies  shaded: window";
let measureCtx = null;

function measure(text) {
  measureCtx ??= document.createElement("canvas").getContext("2d");
  measureCtx.font = FONT;
  return measureCtx.measureText(text).width;
}

function wrap(text, width) {
  const lines = [];
  for (const para of String(text).split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (measure(next) > width && line) {
        lines.push(line);
        line = word;
      } else line = next;
    }
    lines.push(line);
  }
  return lines;
}

function messages(state) {
  if (state.error) return [{ text: state.error, color: COLORS.error }];
  const out = [];
  if (state.note) out.push({ text: state.note, color: COLORS.dim });
  for (const w of state.layout?.warnings ?? []) out.push({ text: `! ${w}`, color: COLORS.warning });
  for (const w of state.runWarnings ?? []) out.push({ text: `! last run: ${w}`, color: COLORS.warning });
  return out;
}

// Tick labels under the axis: the target and the clean indices first, then evenly spaced ones;
// a label that would touch one already placed is left out, so labels never run together.
function tickLabels(L, maxIndex, X, cell, left, right) {
  const widest = measure(String(maxIndex));
  const step = [1, 2, 5, 10, 20, 50, 100].find((s) => s * cell >= widest + 8) ?? 100;
  const wanted = [L.target_index, ...L.clean.map((c) => c.index).sort((a, b) => a - b)];
  for (let i = 0; i < maxIndex; i += step) wanted.push(i);
  const placed = [];
  for (const i of wanted) {
    const w = measure(String(i));
    const cx = Math.min(Math.max(X(i) + cell / 2, left + w / 2), right - w / 2);
    const x = cx - w / 2;
    if (placed.some((p) => p.i === i || (x < p.x + p.w + 4 && p.x < x + w + 4))) continue;
    placed.push({ i, x, w, cx });
  }
  return placed;
}

function planDrawing(state, width) {
  const rects = [];
  const texts = [];
  const text = (t, x, cy, color, align = "left") => {
    const w = measure(t);
    const left = align === "center" ? x - w / 2 : x;
    texts.push({ text: t, x: left, y: cy - FONT_PX / 2, w, h: FONT_PX, color });
  };
  const inner = width - 2 * PAD;
  let y = 6;
  const L = state.layout;
  if (!L) {
    text(state.pending ? "resolving layout..." : "no layout", PAD, y + LINE / 2, COLORS.text);
    y += LINE;
  } else {
    const header = `${L.preset} | window ${L.latent_window_size} | target ${L.target_index} | SigLIP: ${L.siglip.label}`;
    for (const line of wrap(header, inner)) { text(line, PAD, y + LINE / 2, COLORS.text); y += LINE; }
    y += 4;
    const all = [L.target_index, ...L.clean.map((c) => c.index), ...L.clean_2x.indices, ...L.clean_4x.indices];
    const maxIndex = Math.max(L.latent_window_size + 1, ...all) + 1;
    const x0 = PAD + Math.max(...ROWS.map(([name]) => measure(name))) + 8;
    const cell = (width - x0 - PAD) / maxIndex;
    const X = (i) => x0 + i * cell;
    const row = {};
    for (const [name, h] of ROWS) { row[name] = { y, h }; text(name, PAD, y + h / 2, COLORS.dim); y += h + 3; }
    // the latent window 0..lws-1 (where a video's frames would be), shaded
    rects.push({ x: X(0), y: row.noisy.y - 2, w: cell * L.latent_window_size, h: y - row.noisy.y + 1, color: "#23272d" });
    const slot = (x, r, w, color, label, mask = false) => {
      rects.push({ x, y: r.y, w: Math.max(w, 2), h: r.h, color, mask });
      // a label only where it fits its box: in a crowded axis the tick labels name the indices
      if (label && measure(label) <= w - 2) text(label, x + w / 2, r.y + r.h / 2, "#0d0f11", "center");
    };
    slot(X(L.target_index) + 1, row.noisy, cell - 2, COLORS.target, "T");
    // 1x clean latents; several at one index are stacked side by side in their cell
    const byIndex = {};
    for (const c of L.clean) (byIndex[c.index] ??= []).push(c);
    for (const [index, slots] of Object.entries(byIndex)) {
      const w = (cell - 2) / slots.length;
      slots.forEach((c, k) => {
        const color = c.kind === "control" ? (c.control === 0 ? COLORS.start : COLORS.control) : COLORS.zero;
        const short = c.kind === "control" ? (c.control === 0 ? "S" : `C${c.control}`) : c.kind === "post" ? "P" : "0";
        slot(X(Number(index)) + 1 + k * w, row["1x"], w - 1, color, short, !!c.mask);
      });
    }
    for (const [key, name, color] of [["clean_2x", "2x", COLORS.group2x], ["clean_4x", "4x", COLORS.group4x]]) {
      for (const i of L[key].indices) slot(X(i) + 1, row[name], cell - 2, color);
      if (!L[key].present) text("off", x0 + 2, row[name].y + row[name].h / 2, COLORS.dim);
    }
    // time axis with index ticks
    const axisY = y + 2;
    rects.push({ x: X(0), y: axisY, w: X(maxIndex) - X(0), h: 1, color: COLORS.axis });
    for (const t of tickLabels(L, maxIndex, X, cell, x0, width - PAD)) {
      rects.push({ x: X(t.i) + cell / 2, y: axisY, w: 1, h: 4, color: COLORS.axis });
      text(String(t.i), t.cx, axisY + 5 + LINE / 2, COLORS.axis, "center");
    }
    y = axisY + 5 + LINE + 4;
    for (const line of wrap(LEGEND, inner)) { text(line, PAD, y + LINE / 2, COLORS.dim); y += LINE; }
  }
  y += 4;
  for (const m of messages(state)) {
    for (const line of wrap(m.text, inner)) { text(line, PAD, y + LINE / 2, m.color); y += LINE; }
  }
  return { rects, texts, height: y + 6 };
}

function drawLayout(ctx, node, width, y0, state) {
  const plan = planDrawing(state, width);
  // what the picture shows, for the browser test: its text boxes, for which request, of which state
  state.labelBoxes = plan.texts.map(({ text, x, y, w, h }) => ({ text, x, y, w, h }));
  state.labelBoxesKey = state.drawnKey ?? null;
  state.labelWidth = width;
  state.drawnVersion = state.version;
  ctx.save();
  ctx.fillStyle = COLORS.background;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(PAD / 2, y0, width - PAD, plan.height, 6) : ctx.rect(PAD / 2, y0, width - PAD, plan.height);
  ctx.fill();
  for (const r of plan.rects) {
    ctx.fillStyle = r.color;
    ctx.fillRect(r.x, y0 + r.y, r.w, r.h);
    if (r.mask) {
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(r.x + 0.5, y0 + r.y + 0.5, r.w - 1, r.h - 1);
    }
  }
  ctx.font = FONT;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  for (const t of plan.texts) {
    ctx.fillStyle = t.color;
    ctx.fillText(t.text, t.x, y0 + t.y + t.h / 2);
  }
  ctx.restore();
  return plan.height;
}

// ---- the node hook ----------------------------------------------------------------------------

function previewHeight(node, width) {
  return planDrawing(node.framepackLayout, width ?? node.size[0]).height;
}

function setUp(node) {
  node.framepackLayout = { layout: null, error: null, note: null, runWarnings: [], pending: false, version: 0 };
  node.addCustomWidget({
    name: PREVIEW_WIDGET,
    type: PREVIEW_WIDGET,
    value: null,
    options: { serialize: false },
    serialize: false,
    computeSize: (width) => [width, previewHeight(node, width)],
    draw(ctx, n, width, y) {
      // a change that fired no callback (e.g. a graph loaded from a file) still refreshes
      const key = JSON.stringify(previewRequest(n));
      if (key !== n.framepackLayout.requestKey) scheduleRefresh(n, 30);
      drawLayout(ctx, n, width, y, n.framepackLayout);
    },
  });
  for (const w of node.widgets ?? []) {
    if (w.name?.startsWith("framepack_")) continue;
    const original = w.callback;
    w.callback = function (...args) {
      const r = original?.apply(this, args);
      scheduleRefresh(node);
      return r;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const r = onConnectionsChange?.apply(this, args);
    node.framepackLayout.runWarnings = []; // other pictures: the last run's sizes no longer apply
    scheduleRefresh(node);
    return r;
  };
  scheduleRefresh(node, 0);
}

app.registerExtension({
  name: "framepack.oneframe.layout_preview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      setUp(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const state = this.framepackLayout;
      if (state) {
        state.runWarnings = [...(output?.framepack_warnings ?? [])];
        state.version += 1;
        redraw(this);
      }
      return r;
    };
  },
});

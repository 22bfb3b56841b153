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
const PLOT_HEIGHT = 128; // header, rows, axis, legend; warning lines are added below it
const LINE = 14;

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
function countControls(node) {
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

function wrap(ctx, text, width) {
  const lines = [];
  for (const para of String(text).split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > width && line) {
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

function box(ctx, x, y, w, h, fill, label) {
  ctx.fillStyle = fill;
  ctx.fillRect(x, y, Math.max(w, 2), h);
  if (label) {
    ctx.fillStyle = "#0d0f11";
    ctx.textAlign = "center";
    ctx.fillText(label, x + w / 2, y + h / 2 + 3.5, Math.max(w - 2, 8));
  }
}

function drawLayout(ctx, node, width, y0, state) {
  const pad = 10;
  const msgs = messages(state);
  ctx.save();
  ctx.font = "10px sans-serif";
  const msgLines = msgs.flatMap((m) => wrap(ctx, m.text, width - 2 * pad).map((t) => ({ t, color: m.color })));
  const height = PLOT_HEIGHT + msgLines.length * LINE;
  ctx.fillStyle = COLORS.background;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(pad / 2, y0, width - pad, height, 6) : ctx.rect(pad / 2, y0, width - pad, height);
  ctx.fill();

  const L = state.layout;
  ctx.textAlign = "left";
  ctx.fillStyle = COLORS.text;
  if (!L) {
    ctx.fillText(state.pending ? "resolving layout..." : "no layout", pad, y0 + 16);
  } else {
    ctx.fillText(
      `${L.preset} | window ${L.latent_window_size} | target ${L.target_index} | SigLIP: ${L.siglip.label}`,
      pad, y0 + 14, width - 2 * pad,
    );
    const all = [L.target_index, ...L.clean.map((c) => c.index), ...L.clean_2x.indices, ...L.clean_4x.indices];
    const maxIndex = Math.max(L.latent_window_size + 1, ...all) + 1;
    const labelW = 26;
    const x0 = pad + labelW;
    const cell = (width - x0 - pad) / maxIndex;
    const X = (i) => x0 + i * cell;
    const rows = { noisy: y0 + 24, "1x": y0 + 46, "2x": y0 + 68, "4x": y0 + 80 };
    const rowH = { noisy: 18, "1x": 18, "2x": 9, "4x": 9 };

    ctx.fillStyle = COLORS.dim;
    for (const [name, y] of Object.entries(rows)) ctx.fillText(name, pad, y + rowH[name] / 2 + 3.5);

    // the latent window 0..lws-1 (where a video's frames would be), shaded
    ctx.fillStyle = "#23272d";
    ctx.fillRect(X(0), rows.noisy - 2, cell * L.latent_window_size, rows["4x"] + rowH["4x"] - rows.noisy + 4);

    box(ctx, X(L.target_index) + 1, rows.noisy, cell - 2, rowH.noisy, COLORS.target, "T");
    // 1x clean latents; several at one index are stacked side by side in their cell
    const byIndex = {};
    for (const c of L.clean) (byIndex[c.index] ??= []).push(c);
    for (const [index, slots] of Object.entries(byIndex)) {
      const w = (cell - 2) / slots.length;
      slots.forEach((c, k) => {
        const color = c.kind === "control" ? (c.control === 0 ? COLORS.start : COLORS.control) : COLORS.zero;
        const short = c.kind === "control" ? (c.control === 0 ? "S" : `C${c.control}`) : c.kind === "post" ? "P" : "0";
        box(ctx, X(Number(index)) + 1 + k * w, rows["1x"], w - 1, rowH["1x"], color, short);
        if (c.mask) {
          ctx.strokeStyle = "#ffffff";
          ctx.strokeRect(X(Number(index)) + 1.5 + k * w, rows["1x"] + 0.5, w - 2, rowH["1x"] - 1);
        }
      });
    }
    for (const i of L.clean_2x.indices) box(ctx, X(i) + 1, rows["2x"], cell - 2, rowH["2x"], COLORS.group2x);
    for (const i of L.clean_4x.indices) box(ctx, X(i) + 1, rows["4x"], cell - 2, rowH["4x"], COLORS.group4x);
    if (!L.clean_2x.present) { ctx.fillStyle = COLORS.dim; ctx.fillText("off", x0 + 2, rows["2x"] + 8); }
    if (!L.clean_4x.present) { ctx.fillStyle = COLORS.dim; ctx.fillText("off", x0 + 2, rows["4x"] + 8); }

    // time axis with index ticks
    const axisY = y0 + 96;
    ctx.strokeStyle = COLORS.axis;
    ctx.beginPath();
    ctx.moveTo(X(0), axisY);
    ctx.lineTo(X(maxIndex), axisY);
    ctx.stroke();
    const every = cell >= 14 ? 1 : cell >= 6 ? 5 : 10;
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    for (let i = 0; i < maxIndex; i++) {
      if (i % every && i !== L.target_index) continue;
      ctx.fillRect(X(i) + cell / 2, axisY, 1, 3);
      ctx.fillText(String(i), X(i) + cell / 2, axisY + 12);
    }
    ctx.textAlign = "left";
    ctx.fillStyle = COLORS.dim;
    ctx.fillText("T noisy target  S start  C# control  P zero post  white edge: mask applies  shaded: window",
      pad, axisY + 26, width - 2 * pad);
  }
  ctx.textAlign = "left";
  msgLines.forEach((m, k) => {
    ctx.fillStyle = m.color;
    ctx.fillText(m.t, pad, y0 + PLOT_HEIGHT + 4 + k * LINE);
  });
  ctx.restore();
  return height;
}

// ---- the node hook ----------------------------------------------------------------------------

function previewHeight(node) {
  const state = node.framepackLayout;
  const n = (state.layout?.warnings?.length ?? 0) + (state.error ? 2 : 0) + (state.note ? 2 : 0) +
    (state.error ? 0 : (state.runWarnings?.length ?? 0));
  return PLOT_HEIGHT + n * LINE * 1.6;
}

function setUp(node) {
  node.framepackLayout = { layout: null, error: null, note: null, runWarnings: [], pending: false, version: 0 };
  node.addCustomWidget({
    name: PREVIEW_WIDGET,
    type: PREVIEW_WIDGET,
    value: null,
    options: { serialize: false },
    serialize: false,
    computeSize: (width) => [width, previewHeight(node)],
    draw(ctx, n, width, y) {
      // a change that fired no callback (e.g. a graph loaded from a file) still refreshes
      const key = JSON.stringify(previewRequest(n));
      if (key !== n.framepackLayout.requestKey) scheduleRefresh(n, 30);
      drawLayout(ctx, n, width, y, n.framepackLayout);
      n.framepackLayout.drawnVersion = n.framepackLayout.version; // what the picture shows (for tests)
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

// The browser side of tests/test_browser.py, against a real ComfyUI server with the pack:
//   node check_workflows.mjs <comfy url> <out dir> [widget=value]
// For every example workflow the server lists in /api/workflow_templates for the pack:
//   0. (once) open the template browser on the pack's templates and screenshot it;
//   1. load it into the graph the way the template browser does (fetch + app.loadGraphData with
//      openSource "template"), keep the view it opens at (zoom, the frontend's text-hiding zoom,
//      node rectangles, whether the Note's text fits) and a screenshot, list node types the
//      frontend does not know (must be none) and keep the text of the missing-models dialog;
//   2. convert it to an API prompt with the frontend's own app.graphToPrompt();
//   3. on each FramePackOneFrameLayout node: wait for the layout drawing, screenshot the node,
//      change one widget (default target_index -> resolved target + 3), wait until the drawn
//      state holds the new value, screenshot again;
//      then the label boxes of the drawing for a sweep of target indices up to 255, and the node
//      rectangles after an out-of-range target (the node grows with its red error);
//   4. screenshot the whole workflow;
//   5. (once) add every node of the pack to an empty graph, as a user does, and keep which titles the
//      canvas draws whole (also done for each template's open view, step 1).
// Writes <out dir>/results.json (and the PNGs) for pytest to judge.
import fs from "node:fs";
import path from "node:path";
import { closeDialog, fitAll, focusGraph, nodeClip, openComfy, openTemplateBrowser } from "./comfy_page.mjs";

const [url, outDir, change = "target_index"] = process.argv.slice(2);
const PACK = process.env.FRAMEPACK_PACK_NAME || "framepack_oneframe";
fs.mkdirSync(outDir, { recursive: true });
const started = Date.now();
// the frontend's default text-hiding zoom (MinFontSizeForLOD), which the open view must clear
const { page, pageErrors, close } = await openComfy(url, { settings: { "LiteGraph.Canvas.MinFontSizeForLOD": null } });
const SWEEP = process.env.FRAMEPACK_SWEEP_TEMPLATE || "framepack_kisekaeichi";
const SWEEP_TARGETS = [0, 1, 2, 9, 10, 11, 50, 99, 100, 101, 127, 200, 249, 250, 251, 254, 255];
const results = { pack: PACK, templates: null, workflows: {}, pageErrors };

// Top of the drawing in a node screenshot (CSS px at zoom 1): title bar + the preview widget's y.
async function drawingTop(nodeId) {
  return page.evaluate((id) => {
    const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "framepack_layout_preview");
    return window.LiteGraph.NODE_TITLE_HEIGHT + (w.y ?? w.last_y);
  }, nodeId);
}

const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

// Every node's rectangle in graph units, title bar included.
async function nodeRects() {
  return page.evaluate(() => window.app.graph.nodes.map((n) => ({ id: n.id, type: n.type,
    rect: [n.pos[0], n.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT, n.size[0], n.size[1] + window.LiteGraph.NODE_TITLE_HEIGHT] })));
}

// Set a node's widget as a user's edit does: the value, then the widget's callback.
async function setWidget(nodeId, name, value) {
  await page.evaluate(([id, name, v]) => {
    const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === name);
    w.value = v;
    w.callback?.(v);
  }, [nodeId, name, value]);
}

// Set a layout widget, wait until it is resolved AND drawn (the label boxes belong to the drawn
// request); the node must be on screen to be drawn.
async function setAndDraw(nodeId, name, value) {
  await setWidget(nodeId, name, value);
  await waitLayout(nodeId, `(s) => s.request && s.request.widgets[${JSON.stringify(name)}] === ${JSON.stringify(value)}`);
  await page.evaluate(() => window.app.canvas.setDirty(true, true));
  await page.waitForFunction((id) => {
    const s = window.app.graph.getNodeById(id).framepackLayout;
    window.app.canvas.setDirty(true, true);
    return s.labelBoxesKey === s.drawnKey;
  }, nodeId, { timeout: 10000 });
  return page.evaluate((id) => {
    const n = window.app.graph.getNodeById(id);
    const s = n.framepackLayout;
    return { value: s.request.widgets, error: s.error, warnings: s.layout?.warnings ?? [], labelBoxes: s.labelBoxes,
      width: s.labelWidth };
  }, nodeId);
}

// The nodes' titles as the canvas draws them: one frame drawn with the canvas's fillText spied on.
// A title cut to fit its node is drawn as "FramePack Contr..." and never as the whole title.
async function drawnTitles() {
  return page.evaluate(() => {
    const drawn = new Set();
    const proto = CanvasRenderingContext2D.prototype;
    const fillText = proto.fillText;
    proto.fillText = function (text, ...rest) {
      drawn.add(String(text));
      return fillText.call(this, text, ...rest);
    };
    try {
      window.app.canvas.draw(true, true);
    } finally {
      proto.fillText = fillText;
    }
    return window.app.graph.nodes.map((n) => ({ id: n.id, type: n.type, title: n.title, width: n.size[0],
      whole: drawn.has(n.title) }));
  });
}

// Every node type of the pack added alone to an empty graph at zoom 1 (the way the node search and
// the node library add one), its title as drawn; then all of them together for the picture.
async function freshNodes() {
  const types = await page.evaluate((pack) => Object.entries(window.LiteGraph.registered_node_types)
    .filter(([, cls]) => cls.nodeData?.python_module === `custom_nodes.${pack}`).map(([type]) => type), PACK);
  const nodes = [];
  for (const type of types) {
    await page.evaluate((type) => {
      const { app, LiteGraph } = window;
      app.graph.clear();
      const node = LiteGraph.createNode(type);
      node.pos = [100, 100];
      app.graph.add(node);
    }, type);
    await focusGraph(page, 0, 0, 1);
    nodes.push(...(await drawnTitles()));
  }
  await page.evaluate((types) => {
    window.app.graph.clear();
    for (const type of types) window.app.graph.add(window.LiteGraph.createNode(type));
  }, types);
  await page.waitForTimeout(1500); // the layout node grows with its drawing (a fetch)
  await page.evaluate(() => {
    const { app, LiteGraph } = window;
    let x = 0, y = 0, column = 0;
    for (const node of app.graph.nodes) {
      if (y > 0 && y + node.size[1] > 1400) { x += column + 40; y = 0; column = 0; }
      node.pos = [x, y + LiteGraph.NODE_TITLE_HEIGHT];
      y += node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 30;
      column = Math.max(column, node.size[0]);
    }
  });
  await fitAll(page);
  await page.waitForTimeout(300);
  const shot = path.join(outDir, "fresh-nodes.png");
  await page.screenshot({ path: shot });
  return { types, nodes, shot };
}

async function templateBrowser() {
  await openTemplateBrowser(page, PACK);
  // the cards' pictures are blob: URLs (the browser fetches them): find the cards by their name
  const names = results.templates[PACK] ?? [];
  const cards = () => page.evaluate(([names, pack]) => {
    // the template browser's dialog (another dialog or banner may be in the page too)
    const dialog = [...document.querySelectorAll(".p-dialog")].find((d) => d.innerText.includes(pack));
    const imgs = [...(dialog?.querySelectorAll("img") ?? [])].filter((i) => i.naturalWidth > 0);
    const texts = new Set([...(dialog?.querySelectorAll("*") ?? [])].map((e) => e.childElementCount ? "" : e.innerText?.trim()));
    return { names: names.filter((n) => texts.has(n)),
      images: imgs.map((i) => ({ naturalWidth: i.naturalWidth, shownWidth: i.getBoundingClientRect().width })) };
  }, [names, PACK]);
  for (let i = 0; i < 50 && (await cards()).images.length < names.length; i++) await page.waitForTimeout(200);
  await page.waitForTimeout(500);
  const shot = path.join(outDir, "template-browser.png");
  await page.screenshot({ path: shot });
  const shown = await cards();
  // close it before anything else clicks on the page
  return { shot, ...shown, closed: await closeDialog(page, "Templates") };
}

async function waitLayout(nodeId, predicate, timeout = 15000) {
  await page.waitForFunction(([id, predicate]) => {
    const s = window.app.graph.getNodeById(id)?.framepackLayout;
    if (!s || s.pending || !(s.layout || s.error)) return false;
    return new Function("s", `return (${predicate})(s)`)(s);
  }, [nodeId, predicate], { timeout });
  return page.evaluate((id) => {
    const s = window.app.graph.getNodeById(id).framepackLayout;
    return { layout: s.layout, error: s.error, request: s.request, version: s.version };
  }, nodeId);
}

try {
  const templates = await page.evaluate(async () => (await window.app.api?.fetchApi?.("/workflow_templates")
    ?? await fetch("/api/workflow_templates")).json());
  results.templates = templates;
  for (const name of templates[PACK] ?? []) {
    const r = { name, missing: [], screenshots: {} };
    results.workflows[name] = r;
    const loaded = await page.evaluate(async ([pack, name]) => {
      const res = await fetch(`/api/workflow_templates/${pack}/${name}.json`);
      const wf = await res.json();
      await window.app.loadGraphData(wf, true, true, name, { openSource: "template" });
      const types = [...new Set(wf.nodes.map((n) => n.type))];
      return {
        status: res.status,
        nodeCount: wf.nodes.length,
        loadedCount: window.app.graph.nodes.length,
        missing: types.filter((t) => !window.LiteGraph.registered_node_types[t]),
        layoutNodes: window.app.graph.nodes.filter((n) => n.type === "FramePackOneFrameLayout").map((n) => n.id),
      };
    }, [PACK, name]);
    Object.assign(r, loaded);
    // the view the template opens at (1.45 fits the view to the graph a frame later: wait); the
    // mouse off the graph, so no tooltip from the last click covers the picture
    await page.mouse.move(1, 999);
    await frames();
    await page.waitForTimeout(500);
    await frames();
    r.open = await page.evaluate(() => {
      const { app } = window;
      const c = app.canvas;
      const rect = c.canvas.getBoundingClientRect();
      return {
        scale: c.ds.scale, offset: [...c.ds.offset], lowQuality: c.low_quality,
        threshold: c._lowQualityZoomThreshold, dpr: window.devicePixelRatio,
        minFontSizeForLOD: app.extensionManager.setting.get("LiteGraph.Canvas.MinFontSizeForLOD"),
        canvas: [rect.left, rect.top, rect.width, rect.height],
        notes: app.graph.nodes.filter((n) => n.type === "Note").map((n) => {
          const el = n.widgets[0].element ?? n.widgets[0].inputEl;
          return { id: n.id, scrollHeight: el.scrollHeight, clientHeight: el.clientHeight };
        }),
      };
    });
    r.open.rects = await nodeRects();
    r.open.titles = await drawnTitles();
    r.screenshots.open = path.join(outDir, `${name}-open.png`);
    await page.screenshot({ path: r.screenshots.open });
    // the loaders' download links (properties.models): the frontend lists the files it lacks.
    // Frontend 1.3x (ComfyUI 0.3.75) opens a "Missing Models" dialog; 1.45 (ComfyUI 0.28) shows an
    // error toast whose "Show missing models" button opens the properties panel's error group.
    // Keep that text, then close the dialog or panel (it would catch the clicks below).
    const missingUi = await page.evaluate(async () => {
      const dialog = () => [...document.querySelectorAll(".p-dialog")].find((d) => d.innerText.includes("Missing Models"));
      const button = () => [...document.querySelectorAll("button")].find((b) => /Show missing models/i.test(b.innerText));
      for (let i = 0; i < 30 && !dialog() && !button(); i++) await new Promise((ok) => setTimeout(ok, 100));
      return dialog() ? { kind: "dialog", text: dialog().innerText } : button() ? { kind: "panel" } : null;
    });
    r.missingModelsDialog = missingUi?.text ?? null;
    if (missingUi?.kind === "dialog") {
      if (!(await closeDialog(page, "Missing Models"))) throw new Error("the Missing Models dialog did not close");
    } else if (missingUi?.kind === "panel") {
      await page.getByRole("button", { name: /Show missing models/i }).first().click();
      const group = page.locator('[data-testid="error-group-missing-model"]:visible').first();
      await group.waitFor({ timeout: 10000 });
      r.missingModelsDialog = await group.innerText();
      await page.getByRole("button", { name: "Toggle properties panel" }).first().click();
      await group.waitFor({ state: "hidden", timeout: 10000 });
    }
    r.api = (await page.evaluate(() => window.app.graphToPrompt())).output;

    r.layouts = [];
    for (const id of loaded.layoutNodes) {
      const node = await page.evaluate((id) => {
        const n = window.app.graph.getNodeById(id);
        return { pos: [...n.pos], widgets: Object.fromEntries(n.widgets.map((w) => [w.name, w.value])) };
      }, id);
      await focusGraph(page, node.pos[0], node.pos[1] - 40, 1);
      const before = await waitLayout(id, "(s) => true");
      const shotBefore = path.join(outDir, `${name}-layout-${id}-before.png`);
      await page.waitForTimeout(300);
      await page.screenshot({ path: shotBefore, clip: await nodeClip(page, id) });

      const current = before.layout ? before.layout[change] : 0;
      const newValue = (current ?? 0) + 3;
      await setWidget(id, change, newValue);
      const after = await waitLayout(id, `(s) => s.request && s.request.widgets[${JSON.stringify(change)}] === ${newValue}`);
      await focusGraph(page, node.pos[0], node.pos[1] - 40, 1);
      await page.waitForTimeout(300);
      const shotAfter = path.join(outDir, `${name}-layout-${id}-after.png`);
      await page.screenshot({ path: shotAfter, clip: await nodeClip(page, id) });
      // put the widget back so the workflow picture shows the shipped values
      await setWidget(id, change, node.widgets[change]);
      await waitLayout(id, `(s) => s.request && s.request.widgets[${JSON.stringify(change)}] === ${JSON.stringify(node.widgets[change])}`);
      const drawTop = await drawingTop(id);

      // the same through the real UI: a mouse click on the widget's increment arrow
      await focusGraph(page, node.pos[0], node.pos[1] - 40, 1, 300, 150);
      const arrow = await page.evaluate(([id, change]) => {
        const n = window.app.graph.getNodeById(id);
        const w = n.widgets.find((w) => w.name === change);
        const ds = window.app.canvas.ds;
        const rect = window.app.canvas.canvas.getBoundingClientRect();
        return { x: rect.left + (n.pos[0] + n.size[0] - 20 + ds.offset[0]) * ds.scale,
          y: rect.top + (n.pos[1] + (w.y ?? w.last_y) + 10 + ds.offset[1]) * ds.scale };
      }, [id, change]);
      await page.mouse.click(arrow.x, arrow.y);
      const clickedValue = await page.evaluate(([id, change]) =>
        window.app.graph.getNodeById(id).widgets.find((w) => w.name === change).value, [id, change]);
      const clicked = await waitLayout(id, `(s) => s.request && s.request.widgets[${JSON.stringify(change)}] === ${clickedValue}`);
      // label boxes: the shipped values, a sweep of targets, then an out-of-range target (red error)
      await focusGraph(page, node.pos[0], node.pos[1] - 40, 1);
      const labels = [];
      for (const t of name === SWEEP ? SWEEP_TARGETS : [255]) labels.push(await setAndDraw(id, "target_index", t));
      const farShot = path.join(outDir, `${name}-layout-${id}-target255.png`); // the most crowded axis
      await page.screenshot({ path: farShot, clip: await nodeClip(page, id) });
      const error = await setAndDraw(id, "target_index", 300);
      const errorShot = path.join(outDir, `${name}-layout-${id}-error.png`);
      await page.screenshot({ path: errorShot, clip: await nodeClip(page, id) });
      const errorRects = await nodeRects();
      await setAndDraw(id, "target_index", node.widgets.target_index);
      r.layouts.push({ id, widgets: node.widgets, change, newValue, before, after, shotBefore, shotAfter, drawTop,
        clickedValue, clicked, labels, error, errorShot, errorRects, farShot });
    }
    await fitAll(page);
    await page.waitForTimeout(300);
    r.screenshots.workflow = path.join(outDir, `${name}.png`);
    await page.screenshot({ path: r.screenshots.workflow });

    // a connection change redraws too: unplug the further controls from the layout node
    for (const lay of r.layouts) {
      const unplugged = await page.evaluate((id) => {
        const n = window.app.graph.getNodeById(id);
        const slot = n.inputs.findIndex((i) => i.name === "controls");
        if (slot < 0 || n.inputs[slot].link == null) return false;
        n.disconnectInput(slot);
        window.app.canvas.setDirty(true, true);
        return true;
      }, lay.id);
      if (unplugged) lay.unplugged = await waitLayout(lay.id, "(s) => s.request && s.request.num_controls === 1");
    }
  }
  // after the workflows, so that its dialog can never catch their clicks
  try {
    results.templateBrowser = await templateBrowser();
  } catch (e) {
    results.templateBrowser = { error: String(e?.stack || e) };
    await page.screenshot({ path: path.join(outDir, "template-browser-failed.png") });
  }
  results.freshNodes = await freshNodes();
  // The Vue node renderer of current frontends (off by default in 1.45; users can switch it on): the
  // drawing must follow the widgets there too (1.3x has an early one behind the same setting).
  results.vue = await page.evaluate(async () => {
    const setting = window.app.extensionManager?.setting;
    const known = setting?.get?.("Comfy.VueNodes.Enabled") !== undefined;
    if (!known) return { supported: false };
    await setting.set("Comfy.VueNodes.Enabled", true);
    return { supported: true };
  });
  if (results.vue.supported) {
    const name = "framepack_kisekaeichi";
    await page.evaluate(async ([pack, name]) => {
      const wf = await (await fetch(`/api/workflow_templates/${pack}/${name}.json`)).json();
      await window.app.loadGraphData(wf, true, true, name);
    }, [PACK, name]);
    await page.waitForFunction(() => document.querySelectorAll("[data-node-id]").length > 5, null, { timeout: 20000 });
    const id = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "FramePackOneFrameLayout").id);
    const drawn = (predicate) => waitLayout(id, `(s) => s.drawnVersion === s.version && (${predicate})(s)`);
    results.vue.vueNodes = await page.evaluate(() => document.querySelectorAll("[data-node-id]").length);
    results.vue.before = await drawn("(s) => !!s.layout");
    const newValue = (results.vue.before.layout.target_index ?? 0) + 3;
    await setWidget(id, "target_index", newValue);
    results.vue.newValue = newValue;
    results.vue.after = await drawn(`(s) => s.layout && s.layout.target_index === ${newValue}`);
    const box = await page.locator(`[data-node-id="${id}"]`).first().boundingBox();
    results.vue.shot = path.join(outDir, `vue-nodes-${name}-layout.png`);
    if (box) await page.screenshot({ path: results.vue.shot, clip: box });
    await page.evaluate(() => window.app.extensionManager.setting.set("Comfy.VueNodes.Enabled", false));
  }
} catch (e) {
  results.fatal = String(e?.stack || e);
} finally {
  results.seconds = (Date.now() - started) / 1000;
  fs.writeFileSync(path.join(outDir, "results.json"), JSON.stringify(results, null, 2));
  await close();
}

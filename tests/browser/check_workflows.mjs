// The browser side of tests/test_browser.py, against a real ComfyUI server with the pack:
//   node check_workflows.mjs <comfy url> <out dir> [widget=value]
// For every example workflow the server lists in /api/workflow_templates for the pack:
//   1. load it into the graph the way the template browser does (fetch + app.loadGraphData),
//      list node types the frontend does not know (must be none) and keep the text of the
//      missing-models dialog;
//   2. convert it to an API prompt with the frontend's own app.graphToPrompt();
//   3. on each FramePackOneFrameLayout node: wait for the layout drawing, screenshot the node,
//      change one widget (default target_index -> resolved target + 3), wait until the drawn
//      state holds the new value, screenshot again;
//   4. screenshot the whole workflow.
// Writes <out dir>/results.json (and the PNGs) for pytest to judge.
import fs from "node:fs";
import path from "node:path";
import { fitAll, focusGraph, nodeClip, openComfy } from "./comfy_page.mjs";

const [url, outDir, change = "target_index"] = process.argv.slice(2);
const PACK = process.env.FRAMEPACK_PACK_NAME || "framepack_oneframe";
fs.mkdirSync(outDir, { recursive: true });
const started = Date.now();
const { page, pageErrors, close } = await openComfy(url);
const results = { pack: PACK, templates: null, workflows: {}, pageErrors };

// Top of the drawing in a node screenshot (CSS px at zoom 1): title bar + the preview widget's y.
async function drawingTop(nodeId) {
  return page.evaluate((id) => {
    const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "framepack_layout_preview");
    return window.LiteGraph.NODE_TITLE_HEIGHT + (w.y ?? w.last_y);
  }, nodeId);
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
      await window.app.loadGraphData(wf, true, true, name);
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
      await page.keyboard.press("Escape");
      await page.waitForFunction(() => ![...document.querySelectorAll(".p-dialog")]
        .some((d) => d.innerText.includes("Missing Models")), null, { timeout: 10000 });
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
      await page.evaluate(([id, change, v]) => {
        const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === change);
        w.value = v;
        w.callback?.(v);
      }, [id, change, newValue]);
      const after = await waitLayout(id, `(s) => s.request && s.request.widgets[${JSON.stringify(change)}] === ${newValue}`);
      await focusGraph(page, node.pos[0], node.pos[1] - 40, 1);
      await page.waitForTimeout(300);
      const shotAfter = path.join(outDir, `${name}-layout-${id}-after.png`);
      await page.screenshot({ path: shotAfter, clip: await nodeClip(page, id) });
      // put the widget back so the workflow picture shows the shipped values
      await page.evaluate(([id, change, v]) => {
        const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === change);
        w.value = v;
        w.callback?.(v);
      }, [id, change, node.widgets[change]]);
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
      r.layouts.push({ id, widgets: node.widgets, change, newValue, before, after, shotBefore, shotAfter, drawTop,
        clickedValue, clicked });
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
  // The Vue node renderer of current frontends (off by default in 1.45; users can switch it on): the
  // drawing must follow the widgets there too. Frontends without it (1.3x) report unsupported.
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
    await page.evaluate(([id, v]) => {
      const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "target_index");
      w.value = v;
      w.callback?.(v);
    }, [id, newValue]);
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

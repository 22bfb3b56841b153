// Builds the example workflows IN the real ComfyUI frontend, so the saved JSON is exactly what
// this frontend writes (widget order, link table, node sizes), and takes a picture of each.
//   node build_workflows.mjs <spec.json> <comfy url> <out dir>
// spec: {workflows: [{name, nodes: [{key, type, col, title?, widgets: {name: value}}],
//                     links: [[fromKey, fromOutput (index or name), toKey, toInput (name)]]}]}
// Nodes are stacked top to bottom in their column; columns are placed left to right.
import fs from "node:fs";
import path from "node:path";
import { fitAll, focusGraph, nodeClip, openComfy, reload } from "./comfy_page.mjs";

const [specPath, url, outDir] = process.argv.slice(2);
const PACK = process.env.FRAMEPACK_PACK_NAME || "framepack_oneframe";
const THUMB = 640;

// The template browser lists a custom node's templates by file name only (both frontends: the
// server's /api/workflow_templates gives names, the store sets title = description = name), so
// the thumbnail is where a template can say what it is: its title, one line on what it does and
// what it needs, and its layout drawing. Square, as the browser's cards are.
async function thumbnail(context, wf, drawingPng, out) {
  const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const card = await context.newPage();
  await card.setViewportSize({ width: THUMB, height: THUMB });
  const img = fs.readFileSync(drawingPng).toString("base64");
  await card.setContent(`<body style="margin:0;width:${THUMB}px;height:${THUMB}px;box-sizing:border-box;
    padding:28px 24px;background:#202226;color:#e8eaed;font-family:sans-serif;display:flex;flex-direction:column;
    text-align:center;gap:14px">
    <div style="font-size:42px;font-weight:bold">${esc(wf.title)}</div>
    <div style="font-size:23px;line-height:1.3">${esc(wf.description)}</div>
    <div style="flex:1;min-height:0;display:flex;align-items:center;justify-content:center">
      <img style="max-width:100%;max-height:100%" src="data:image/png;base64,${img}"></div>
    <div style="font-size:17px;color:#aab0b8">${esc(wf.needs)}</div></body>`);
  await card.screenshot({ path: out });
  await card.close();
}
const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
fs.mkdirSync(outDir, { recursive: true });
const { page, pageErrors, close } = await openComfy(url);

try {
  for (const wf of spec.workflows) {
    await reload(page);
    const result = await page.evaluate(async ([wf, pack]) => {
      const { app, LiteGraph } = window;
      // the pack's own extension module (already loaded by the frontend: the same instance)
      const { titleWidthNeeded } = await import(`/extensions/${pack}/framepack_node_titles.js`);
      app.graph.clear();
      const byKey = {};
      const columns = {};
      for (const n of wf.nodes) {
        const node = LiteGraph.createNode(n.type);
        if (!node) throw new Error(`unknown node type ${n.type}`);
        app.graph.add(node);
        if (n.title) node.title = n.title;
        for (const [name, value] of Object.entries(n.widgets ?? {})) {
          const w = node.widgets?.find((w) => w.name === name);
          if (!w) throw new Error(`${n.type} has no widget ${name}: ${node.widgets?.map((w) => w.name)}`);
          w.value = value;
        }
        if (n.width) node.setSize([n.width, node.computeSize()[1]]);
        // wide enough for the whole title, custom titles and ComfyUI's own nodes included; 8 px of
        // slack for another machine's font rendering
        const titleWidth = titleWidthNeeded(node) + 8;
        if (node.size[0] < titleWidth) node.setSize([titleWidth, node.size[1]]);
        byKey[n.key] = node;
        (columns[n.col] ??= []).push([node, n.row ?? 0]);
      }
      for (const [fromKey, out, toKey, input] of wf.links) {
        const from = byKey[fromKey];
        const to = byKey[toKey];
        const o = typeof out === "number" ? out : from.outputs.findIndex((s) => s.name === out);
        const i = to.inputs.findIndex((s) => s.name === input);
        if (o < 0 || i < 0) throw new Error(`bad link ${fromKey}.${out} -> ${toKey}.${input}`);
        if (!from.connect(o, to, i)) throw new Error(`link refused ${fromKey}.${out} -> ${toKey}.${input}`);
      }
      window._fpColumns = columns;
      return { nodes: app.graph.nodes.length };
    }, [wf, PACK]);
    await page.waitForTimeout(1500); // the layout node's preview fetch (it grows the node); LoadImage previews
    // a Note as tall as its text: grow it until its textarea no longer scrolls (at zoom 1, on screen,
    // so the DOM widget has a real size)
    for (const id of await page.evaluate(() => window.app.graph.nodes.filter((n) => n.type === "Note").map((n) => n.id))) {
      await focusGraph(page, 0, 0, 1);
      await page.evaluate(async (id) => {
        const { app } = window;
        const node = app.graph.getNodeById(id);
        node.pos = [0, 0];
        const el = node.widgets[0].element ?? node.widgets[0].inputEl;
        const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        node.setSize([node.size[0], 60]);
        for (let i = 0; i < 80; i++) {
          app.canvas.setDirty(true, true);
          await frame();
          if (el.clientHeight > 0 && el.scrollHeight <= el.clientHeight) break;
          node.setSize([node.size[0], node.size[1] + 10]);
        }
        node.setSize([node.size[0], node.size[1] + 10]); // a line's slack for other fonts
      }, id);
    }
    await page.evaluate(() => {
      const { app, LiteGraph } = window;
      const columns = window._fpColumns;
      // the layout node as tall as its drawing at its final width (it only ever grows by itself)
      for (const n of app.graph.nodes.filter((n) => n.type === "FramePackOneFrameLayout")) {
        n.setSize([n.size[0], n.computeSize()[1]]);
      }
      // lay out: columns left to right, nodes stacked in each (by their row, then as listed). The
      // graph must fit a 1600x1000 window at a zoom where the frontend still draws text: see
      // tests/test_browser.py test_templates_open_readable. A node that grows (the layout node with a
      // message, SaveImage with its picture) is the last of its column, so it grows into free space.
      const gap = 30;
      const title = LiteGraph.NODE_TITLE_HEIGHT;
      let x = 0;
      for (const col of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
        let y = 0;
        let width = 0;
        const stack = columns[col].map(([node, row], k) => [node, row, k]).sort((a, b) => (a[1] - b[1]) || (a[2] - b[2]));
        for (const [node] of stack) {
          node.pos = [x, y + title];
          y += node.size[1] + title + gap;
          width = Math.max(width, node.size[0]);
        }
        x += width + gap + 20;
      }
      app.graph.setDirtyCanvas(true, true);
    });
    // a close-up of the layout node at 100 % (for the README)
    const layoutId = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "FramePackOneFrameLayout")?.id);
    if (layoutId != null) {
      const pos = await page.evaluate((id) => [...window.app.graph.getNodeById(id).pos], layoutId);
      await focusGraph(page, pos[0], pos[1] - 40, 1.25, 300, 150);
      await page.waitForTimeout(300);
      await page.screenshot({ path: path.join(outDir, `${wf.name}-layout.png`), clip: await nodeClip(page, layoutId) });
      // the drawing alone (from the preview widget down), for the template browser's thumbnail
      const clip = await nodeClip(page, layoutId);
      const [top, height] = await page.evaluate((id) => {
        const n = window.app.graph.getNodeById(id);
        const w = n.widgets.find((w) => w.name === "framepack_layout_preview");
        const s = window.app.canvas.ds.scale;
        return [(window.LiteGraph.NODE_TITLE_HEIGHT + (w.y ?? w.last_y)) * s, w.computeSize(n.size[0])[1] * s];
      }, layoutId);
      const drawing = path.join(outDir, `${wf.name}-drawing.png`);
      await page.screenshot({ path: drawing, clip: { ...clip, y: clip.y + top, height: Math.min(height, clip.height - top) } });
      await thumbnail(page.context(), wf, drawing, path.join(outDir, `${wf.name}-thumb.png`));
    }
    await fitAll(page);
    await page.waitForTimeout(500);
    const json = await page.evaluate(() => {
      const data = window.app.graph.serialize();
      const ds = window.app.canvas.ds;
      data.extra = { ...(data.extra ?? {}), ds: { scale: ds.scale, offset: [...ds.offset] } };
      return data;
    });
    fs.writeFileSync(path.join(outDir, `${wf.name}.json`), JSON.stringify(json, null, 2) + "\n");
    await page.screenshot({ path: path.join(outDir, `${wf.name}.png`) });
    console.log(`built ${wf.name}: ${result.nodes} nodes`);
  }
} finally {
  if (pageErrors.length) console.error("page errors:\n" + pageErrors.join("\n"));
  await close();
}

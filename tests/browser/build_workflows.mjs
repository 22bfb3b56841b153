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
const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
fs.mkdirSync(outDir, { recursive: true });
const { page, pageErrors, close } = await openComfy(url);

try {
  for (const wf of spec.workflows) {
    await reload(page);
    const result = await page.evaluate((wf) => {
      const { app, LiteGraph } = window;
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
        byKey[n.key] = node;
        (columns[n.col] ??= []).push(node);
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
    }, wf);
    await page.waitForTimeout(1500); // the layout node's preview fetch (it grows the node); LoadImage previews
    await page.evaluate(() => {
      const { app, LiteGraph } = window;
      const columns = window._fpColumns;
      // lay out: columns left to right, nodes stacked in each
      const gap = 40;
      const title = LiteGraph.NODE_TITLE_HEIGHT;
      let x = 0;
      for (const col of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
        let y = 0;
        let width = 0;
        for (const node of columns[col]) {
          node.pos = [x, y + title];
          y += node.size[1] + title + gap;
          width = Math.max(width, node.size[0]);
        }
        x += width + gap * 2;
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

// Shared by the browser scripts: open the real ComfyUI frontend in Debian's headless Chromium
// (playwright-core drives /usr/bin/chromium; no browser is ever downloaded).
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

// settings: overrides of the defaults below (a null value leaves the frontend's own default).
export async function openComfy(url, { width = 1600, height = 1000, settings: overrides = {} } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "fp1f-chromium-")); // fresh --user-data-dir
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width, height },
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run"],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e?.stack || e}`));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(`console: ${m.text()}`); });
  // quiet, readable pictures: no minimap, text drawn at every zoom, no first-run dialogs or banner
  const settings = { "Comfy.Minimap.Visible": false, "LiteGraph.Canvas.MinFontSizeForLOD": 1,
    "Comfy.TutorialCompleted": true };
  for (const [id, value] of Object.entries({ ...settings, ...overrides })) {
    if (value === null) continue;
    await page.request.post(`${url}/api/settings/${encodeURIComponent(id)}`, { data: value });
  }
  await page.addInitScript(() => localStorage.setItem("vueNodesBannerDismissed", "true"));
  await page.goto(url);
  await waitForApp(page);
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { page, pageErrors, close };
}

export async function waitForApp(page) {
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.canvas, null, { timeout: 90000 });
}

// A fresh page (no image previews or state left from the previous graph).
export async function reload(page) {
  await page.reload();
  await waitForApp(page);
}

// Put graph point (x, y) at screen offset (left, top) at the given zoom, and let the canvas redraw.
export async function focusGraph(page, x, y, scale = 1, left = 80, top = 120) {
  await page.evaluate(([x, y, scale, left, top]) => {
    const ds = window.app.canvas.ds;
    ds.scale = scale;
    ds.offset[0] = left / scale - x;
    ds.offset[1] = top / scale - y;
    window.app.canvas.setDirty(true, true);
  }, [x, y, scale, left, top]);
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.waitForTimeout(150);
}

// Screen rectangle (CSS pixels) of a node, title bar included.
export async function nodeClip(page, nodeId) {
  return page.evaluate((id) => {
    const node = window.app.graph.getNodeById(id);
    const ds = window.app.canvas.ds;
    const rect = window.app.canvas.canvas.getBoundingClientRect();
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    return {
      x: rect.left + (node.pos[0] + ds.offset[0]) * ds.scale,
      y: rect.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
      width: node.size[0] * ds.scale,
      height: (node.size[1] + title) * ds.scale,
    };
  }, nodeId);
}

// Zoom so that every node fits the window (for workflow pictures).
// The canvas lies under the side bar (left) and the menus (top): keep clear of them.
export async function fitAll(page, margin = 30, left = 80, top = 100) {
  const box = await page.evaluate(() => {
    const nodes = window.app.graph.nodes;
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]);
    const ys = nodes.flatMap((n) => [n.pos[1] - title, n.pos[1] + n.size[1]]);
    const rect = window.app.canvas.canvas.getBoundingClientRect();
    return { x0: Math.min(...xs), y0: Math.min(...ys), x1: Math.max(...xs), y1: Math.max(...ys),
      w: rect.width, h: rect.height, left: rect.left, top: rect.top };
  });
  const scale = Math.min((box.w - left - 2 * margin) / (box.x1 - box.x0), (box.h - top - 2 * margin) / (box.y1 - box.y0), 1.2);
  await focusGraph(page, box.x0, box.y0, scale, left + margin, top + margin);
}

// Open the template browser (Workflow > Browse Templates) on a custom node pack's category.
export async function openTemplateBrowser(page, pack) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const nav = page.getByText(pack, { exact: true }).first();
  await nav.waitFor({ timeout: 15000 });
  await nav.click();
}

// Close the open dialog (Escape, else its close button: frontend 1.3x ignores Escape there);
// true when none is left.
export async function closeDialog(page, text) {
  await page.keyboard.press("Escape");
  const open = () => page.evaluate((text) => [...document.querySelectorAll(".p-dialog")].some((d) => d.innerText.includes(text)), text);
  for (let i = 0; i < 20 && await open(); i++) {
    await page.locator(".p-dialog button:has(i.pi-times), .p-dialog button:has([class*='lucide--x'])").first()
      .click({ timeout: 2000 }).catch(() => {});
    await page.waitForTimeout(200);
  }
  return !(await open());
}

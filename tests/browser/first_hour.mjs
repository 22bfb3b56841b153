// The README's "first hour" pictures, from the templates as the server serves them (run by
// scripts/make_example_workflows.py after it wrote them):
//   node first_hour.mjs <comfy url> <out dir>
// first_hour_templates.png: the template browser on this pack; first_hour_missing_models.png: what
// opening the kisekaeichi template says when a model file is missing; first_hour_error.png: the
// layout node with an out-of-range target_index, the error shown in red before anything is queued.
import path from "node:path";
import { closeDialog, nodeClip, focusGraph, openComfy, openTemplateBrowser } from "./comfy_page.mjs";

const [url, outDir] = process.argv.slice(2);
const PACK = process.env.FRAMEPACK_PACK_NAME || "framepack_oneframe";
const { page, close } = await openComfy(url);
try {
  await openTemplateBrowser(page, PACK);
  await page.waitForTimeout(2500); // the cards' pictures
  await page.screenshot({ path: path.join(outDir, "first_hour_templates.png") });
  // open a card as a user does: a click on its picture
  await page.getByText("framepack_kisekaeichi", { exact: true }).first().click();
  const dialog = page.locator(".p-dialog", { hasText: "Missing Models" }).first();
  await dialog.waitFor({ timeout: 15000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(outDir, "first_hour_missing_models.png") });
  await closeDialog(page, "Missing Models");
  const id = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "FramePackOneFrameLayout").id);
  await page.evaluate((id) => {
    const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "target_index");
    w.value = 300;
    w.callback?.(300);
  }, id);
  const pos = await page.evaluate((id) => [...window.app.graph.getNodeById(id).pos], id);
  await focusGraph(page, pos[0], pos[1] - 40, 1.25, 300, 150);
  await page.waitForFunction((id) => window.app.graph.getNodeById(id).framepackLayout.error, id, { timeout: 15000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(outDir, "first_hour_error.png"), clip: await nodeClip(page, id) });
} finally {
  await close();
}

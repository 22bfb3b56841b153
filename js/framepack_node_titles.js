// FramePack one-frame: a node of this pack, added to the canvas, shows its whole title.
//
// Both frontends (1.3x with ComfyUI 0.3.x, 1.4x with current ComfyUI) size a new node for its title
// as text + 1.33 title heights (LGraphNode.computeSize), but draw the title from one title height
// in and cut it with "..." at the node's width minus two title heights (drawTitleText). A node
// whose width comes from its title alone (FramePack Control List, FramePack FlashAttention-4) so
// opens as "FramePack Contr...". Here a new node is widened to what drawTitleText needs. A node
// loaded from a workflow keeps the size saved with it: configure() runs after onNodeCreated.
import { app } from "../../scripts/app.js";

// "custom_nodes.<this pack's folder>", whatever folder name the user installed the pack under:
// this file is served as /extensions/<folder>/framepack_node_titles.js
const PACK_MODULE = `custom_nodes.${decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2))}`;

let measureCtx = null;

// The width, in graph units at zoom 1, the frontend needs to draw `node`'s title uncut (any node;
// the template builder, tests/browser/build_workflows.mjs, uses it for ComfyUI's own nodes too).
export function titleWidthNeeded(node) {
  measureCtx ??= document.createElement("canvas").getContext("2d");
  measureCtx.font = node.titleFontStyle;
  return Math.ceil(measureCtx.measureText(node.getTitle()).width) + 2 * window.LiteGraph.NODE_TITLE_HEIGHT;
}

app.registerExtension({
  name: "framepack.oneframe.node_titles",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.python_module !== PACK_MODULE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      const needed = titleWidthNeeded(this);
      if (this.size[0] < needed) this.setSize([needed, this.size[1]]);
      return r;
    };
  },
});

/**
 * Reverse-mode autograd over the graph recorded by ops (`Tensor.node`).
 *
 * `backward(loss)` walks the graph from a scalar loss in reverse topological order. Each node's
 * backward accumulates (`+=`) into its inputs' gradient buffers: leaves (parameters) keep theirs in
 * `tensor.grad` across calls, which gives gradient accumulation over micro-batches for free;
 * intermediate gradients are freed as soon as they have been propagated. After the pass the graph
 * is released, so a second `backward` on the same loss is an error.
 *
 * @module
 */
import { GraphError, ShapeError } from "./errors.ts";
import { noGrad, Tensor } from "./tensor.ts";

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS (graphs of deep models overflow recursion).
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [t, expanded] = stack.pop()!;
    if (expanded) {
      order.push(t);
      continue;
    }
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push([t, true]);
    for (const inp of t.node?.inputs ?? []) if (inp.requiresGrad && !seen.has(inp)) stack.push([inp, false]);
  }
  return order; // inputs before outputs
}

/**
 * Computes gradients of `loss` (a one-element tensor) with respect to every leaf tensor with
 * `requiresGrad`, accumulating into `leaf.grad`.
 */
export function backward(loss: Tensor, gradOutput?: Tensor): void {
  if (!loss.requiresGrad) {
    throw new GraphError("backward", `${loss.describe()} does not require grad (no parameter reached it, or noGrad)`);
  }
  if (loss.size !== 1 && !gradOutput) {
    throw new ShapeError("backward", `needs a scalar loss or an explicit gradient, got ${loss.describe()}`);
  }
  if (loss.node === null) {
    throw new GraphError(
      "backward",
      `${loss.describe()} has no recorded graph (it is a leaf, or a previous backward released its graph)`,
    );
  }
  const order = topoOrder(loss);
  // Leaves are the tensors that no op produced; their gradients accumulate in tensor.grad. A
  // computed tensor whose node is gone was released by an earlier backward: its inputs are
  // unreachable now, and treating it as a leaf would silently drop their gradients.
  const released = order.find((t) => t.node === null && t.computed);
  if (released) {
    throw new GraphError(
      "backward",
      `${released.describe()} is part of a graph that a previous backward released; ` +
        `sum the losses and call backward once`,
    );
  }
  const leaves = new Set(order.filter((t) => t.node === null));
  const isLeaf = (t: Tensor) => leaves.has(t);
  const grads = new Map<Tensor, Tensor>();
  const seed = gradOutput ?? Tensor.full(loss.shape, 1, { device: loss.device });
  grads.set(loss, seed);

  const gradOf = (t: Tensor): Tensor => {
    if (isLeaf(t)) {
      if (t.grad === null) {
        t.grad = noGrad(() => Tensor.zeros(t.shape, { device: t.device })).keep();
      }
      return t.grad;
    }
    let g = grads.get(t);
    if (!g) {
      g = noGrad(() => Tensor.zeros(t.shape, { device: t.device }));
      grads.set(t, g);
    }
    return g;
  };

  // Lets a node hand its output gradient to an input as that input's whole gradient (a view of
  // the same memory) when the input has none yet: reshape and add pass gradients through
  // unchanged, so this saves a zero-fill and an accumulate per use. Never for leaves (their
  // gradients persist across calls) or for a caller-owned gradOutput.
  const adopted = new Set<Tensor>(); // a gradient can become the buffer of one input only
  const adopt = (t: Tensor, g: Tensor): boolean => {
    if (isLeaf(t) || grads.has(t) || g === gradOutput || !t.requiresGrad || adopted.has(g)) return false;
    adopted.add(g);
    grads.set(t, g.reshape(t.shape));
    return true;
  };

  noGrad(() => {
    try {
      for (let i = order.length - 1; i >= 0; i--) {
        const t = order[i]!;
        const node = t.node;
        if (node === null) continue; // leaf: its gradient is already in t.grad
        const g = grads.get(t);
        if (g !== undefined) node.backward(g, gradOf, adopt);
        t.node = null; // release the graph as we go
        if (g !== undefined && g !== gradOutput) {
          g.dispose();
          grads.delete(t);
        }
      }
    } finally {
      for (const [t, g] of grads) if (g !== gradOutput && !isLeaf(t)) g.dispose();
      for (const t of order) t.node = null;
    }
  });
}

/** Sets every parameter's accumulated gradient to zero (keeps the buffers). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.grad?.fill(0);
}

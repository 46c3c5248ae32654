/**
 * The nonblocking entry points (a server awaits the device without freezing its event loop):
 * `toArrayAsync` / `readAsync` and `synchronizeAsync` run on a worker thread and give the same
 * data as the blocking calls; errors still become typed exceptions.
 */
import assert from "node:assert/strict";
import { getBackend } from "../ffi/backend.ts";
import { LteNativeError } from "../tensor/errors.ts";
import { Tensor } from "../tensor/mod.ts";

/**
 * Whether timers run while `op` is in flight. A timer is armed, then `op` is awaited again and
 * again (up to `limitMs`) without ever yielding to the timer queue in between: awaiting an
 * already-settled promise runs only microtasks, so if `op` does its work on the JS thread and
 * returns a settled promise, the timer cannot fire and this returns false. Only an op that lets
 * the event loop turn while it waits (a nonblocking FFI call) lets the timer fire.
 */
async function timersRunDuring(op: () => Promise<unknown>, limitMs = 3000): Promise<boolean> {
  let ticked = false;
  const timer = setTimeout(() => ticked = true, 0);
  const start = performance.now();
  try {
    while (!ticked && performance.now() - start < limitMs) await op();
    return ticked;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("the event-loop probe detects a read that blocks the JS thread", async () => {
  const t = Tensor.fromArray(new Float32Array(1024), [1024]);
  try {
    // The blocking read, wrapped in an async function: it returns an already-settled promise.
    // deno-lint-ignore require-await
    assert.equal(await timersRunDuring(async () => t.toArray(), 200), false);
  } finally {
    t.dispose();
  }
});

Deno.test("toArrayAsync() returns the same data as toArray() and lets timers run meanwhile", async () => {
  const t = Tensor.fromArray(Float32Array.from({ length: 1 << 16 }, (_, i) => i * 0.5), [1 << 16]);
  try {
    assert.ok(await timersRunDuring(() => t.toArrayAsync()), "toArrayAsync() blocked the event loop");
    assert.deepEqual(await t.toArrayAsync(), t.toArray());
  } finally {
    t.dispose();
  }
});

Deno.test("synchronizeAsync() lets timers run meanwhile", async () => {
  const be = getBackend("cpu");
  assert.ok(await timersRunDuring(() => be.synchronizeAsync()), "synchronizeAsync() blocked the event loop");
});

Deno.test("a nonblocking call's error message is read from its context, not from the worker thread", async () => {
  const be = getBackend("cpu");
  const buf = new Uint8Array(16);
  const status = await be.sym.lte_mem_read_async(be.ctx, buf, null, 16n); // NULL source: invalid
  assert.throws(() => be.check(status, "lte_mem_read"), (e: unknown) => {
    assert.ok(e instanceof LteNativeError);
    assert.match(e.message, /lte_mem_read \(cpu\): INVALID_ARGUMENT: lte_mem_read: /);
    return true;
  });
});

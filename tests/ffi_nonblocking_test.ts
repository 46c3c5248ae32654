/**
 * The nonblocking entry points (a server awaits the device without freezing its event loop):
 * `toArrayAsync` / `readAsync` and `synchronizeAsync` run on a worker thread and give the same
 * data as the blocking calls; errors still become typed exceptions.
 */
import assert from "node:assert/strict";
import { getBackend } from "../ffi/backend.ts";
import { LteNativeError } from "../ffi/errors.ts";
import { Tensor } from "../tensor/mod.ts";

Deno.test("toArrayAsync() returns the same data as toArray() and lets timers run meanwhile", async () => {
  const t = Tensor.fromArray(Float32Array.from({ length: 1 << 16 }, (_, i) => i * 0.5), [1 << 16]);
  try {
    let ticked = false;
    const timer = new Promise<void>((r) => setTimeout(() => (ticked = true, r()), 0));
    const a = await t.toArrayAsync();
    await timer;
    assert.ok(ticked);
    assert.deepEqual(a, t.toArray());
    await getBackend("cpu").synchronizeAsync();
  } finally {
    t.dispose();
  }
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

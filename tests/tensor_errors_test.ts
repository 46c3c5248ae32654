/**
 * Bad input to the compute core: every case must be a typed exception naming the op and the
 * shapes — never a crash or a silent wrong result.
 */
import assert from "node:assert/strict";
import { Backend, getBackend } from "../ffi/backend.ts";
import { DisposedTensorError, GraphError, LteNativeError, LteOutOfMemoryError, ShapeError } from "../tensor/errors.ts";
import { loadLibrary } from "../ffi/library.ts";
import { Option, Status } from "../ffi/symbols.ts";
import {
  add,
  attention,
  backward,
  crossEntropy,
  embedding,
  linear,
  matmul,
  rope,
  sampleTopP,
  scope,
  sum,
  Tensor,
} from "../tensor/mod.ts";

Deno.test("matmul() with mismatched inner dims names the op and both shapes", () => {
  scope(() => {
    const a = Tensor.zeros([3, 4]), b = Tensor.zeros([5, 2]);
    assert.throws(() => matmul(a, b), (e: unknown) => {
      assert.ok(e instanceof ShapeError);
      assert.match(e.message, /^matmul: inner dimensions differ: f32\[3, 4\]@cpu @ f32\[5, 2\]@cpu/);
      return true;
    });
  });
});

Deno.test("shape and dtype errors are ShapeErrors naming the op", () => {
  scope(() => {
    assert.throws(() => add(Tensor.zeros([2, 3]), Tensor.zeros([3, 2])), /^ShapeError: add: shapes differ/);
    assert.throws(() => linear(Tensor.zeros([2, 3]), Tensor.zeros([4, 5])), /linear: x f32\[2, 3\]@cpu does not fit/);
    assert.throws(() => embedding(Tensor.zeros([2]), Tensor.zeros([4, 5])), /embedding: expected i32 indices/);
    assert.throws(
      () => attention(Tensor.zeros([1, 4, 3, 8]), Tensor.zeros([1, 4, 2, 8]), Tensor.zeros([1, 4, 2, 8])),
      /attention: .* H % HKV == 0/,
    );
    assert.throws(() => rope(Tensor.zeros([1, 2, 3, 5])), /rope: x must be \(B, T, H, D\) with even D/);
    assert.throws(() => Tensor.fromArray([1, 2, 3], [2, 2]), /3 values do not fill shape \[2, 2\]/);
    assert.throws(() => Tensor.zeros([2, 3]).reshape([4, 2]), /reshape: cannot reshape 6 elements/);
  });
});

Deno.test("out-of-range values are RangeErrors, graph misuse GraphErrors, both naming the op", () => {
  scope(() => {
    const range = (re: RegExp) => (e: unknown) =>
      e instanceof RangeError && !(e instanceof ShapeError) && re.test(e.message);
    assert.throws(
      () => embedding(Tensor.fromArray(new Int32Array([1, 9]), [2]), Tensor.zeros([4, 5])),
      range(/^embedding: ids\[1\] = 9 is outside \[0, 4\)/),
    );
    assert.throws(
      () => crossEntropy(Tensor.zeros([2, 5]), Tensor.fromArray(new Int32Array([1, 5]), [2])),
      range(/^crossEntropy: targets\[1\] = 5 is outside \[0, 5\)/),
    );
    assert.throws(
      () => sampleTopP(Tensor.zeros([1, 5]), { seed: 1, topP: 0 }),
      range(/^sampleTopP: temperature must be > 0/),
    );
    const graph = (re: RegExp) => (e: unknown) => e instanceof GraphError && e.op === "backward" && re.test(e.message);
    assert.throws(() => backward(sum(Tensor.zeros([3]))), graph(/does not require grad/));
    const leaf = Tensor.zeros([1]);
    leaf.requiresGrad = true;
    assert.throws(() => backward(leaf), graph(/has no recorded graph/));
  });
});

Deno.test("native validation: an out-of-range id reaching the kernel is an LteNativeError", () => {
  const be = getBackend("cpu");
  scope(() => {
    const ids = Tensor.zeros([2], { dtype: "i32" }).fill(7); // no host copy: only the kernel can check
    const w = Tensor.zeros([4, 3]);
    assert.throws(() => embedding(ids, w), (e: unknown) => {
      assert.ok(e instanceof LteNativeError);
      assert.equal(e.code, Status.INVALID_ARGUMENT);
      assert.equal(e.op, "lte_embedding_forward");
      assert.match(e.message, /lte_embedding_forward/);
      assert.match(e.message, /7/);
      return true;
    });
  });
  // The context stays usable after an error.
  scope(() => assert.equal(Tensor.fromArray([2], [1]).item(), 2));
  assert.ok(!be.closed);
});

Deno.test("unsupported dtype reaches the native check as UNSUPPORTED", () => {
  const be = getBackend("cpu");
  scope(() => {
    const x = Tensor.empty([4], { dtype: "bf16" });
    assert.throws(
      () => be.check(be.sym.lte_gelu_forward(be.ctx, 2, x.ptr, x.ptr, 4), "lte_gelu_forward"),
      (e: unknown) => {
        assert.ok(e instanceof LteNativeError);
        assert.equal(e.code, Status.UNSUPPORTED);
        assert.match(e.message, /bf16/);
        return true;
      },
    );
  });
});

Deno.test("use after dispose is a DisposedTensorError naming the tensor", () => {
  const t = Tensor.zeros([2, 2], { name: "w" });
  t.dispose();
  t.dispose(); // idempotent
  assert.throws(
    () => t.toArray(),
    (e: unknown) => e instanceof DisposedTensorError && /f32\[2, 2\]@cpu 'w'/.test(e.message),
  );
  assert.throws(() => add(t, t), DisposedTensorError);
});

Deno.test("out of memory is an LteOutOfMemoryError and the context recovers", () => {
  const be = new Backend(loadLibrary("cpu"));
  try {
    be.setOption(Option.MEMORY_LIMIT, 1 << 20);
    assert.throws(() => be.alloc(2 << 20), (e: unknown) => {
      assert.ok(e instanceof LteOutOfMemoryError);
      assert.equal(e.code, Status.OUT_OF_MEMORY);
      assert.match(e.message, /lte_mem_alloc/);
      return true;
    });
    const p = be.alloc(1024); // smaller allocations still work
    be.free(p);
  } finally {
    be.close();
  }
});

Deno.test("tensors from two contexts cannot be mixed", () => {
  const other = new Backend(loadLibrary("cpu"));
  try {
    scope(() => {
      const a = Tensor.zeros([2]);
      const b = new Tensor([2], "f32", other);
      assert.throws(() => add(a, b), /add: tensors on different devices/);
      b.dispose();
    });
  } finally {
    other.close();
  }
});

Deno.test("freeing a pointer the context does not own is rejected", () => {
  const be = getBackend("cpu");
  const bogus = Deno.UnsafePointer.create(0x1000n);
  assert.throws(
    () => be.free(bogus),
    (e: unknown) => e instanceof LteNativeError && e.code === Status.INVALID_ARGUMENT,
  );
});

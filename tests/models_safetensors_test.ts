/** safetensors read/write: round trips, HF byte layout, half-precision rounding, every error path. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  bf16ToF32,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  numberToBf16Bits,
  numberToF16Bits,
  readSafetensors,
  readSafetensorsHeader,
  SafetensorsError,
  writeSafetensors,
} from "../models/safetensors.ts";

function withTmp(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "lte-st-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A file with the given header (object or raw text), padded with spaces, and `dataLen` zero bytes. */
function craft(path: string, header: unknown, dataLen: number, opts: { lengthField?: number } = {}): void {
  let text = typeof header === "string" ? header : JSON.stringify(header);
  while ((text.length) % 8 !== 0) text += " ";
  const h = new TextEncoder().encode(text);
  const buf = new Uint8Array(8 + h.length + dataLen);
  new DataView(buf.buffer).setBigUint64(0, BigInt(opts.lengthField ?? h.length), true);
  buf.set(h, 8);
  writeFileSync(path, buf);
}

function expectError(path: string, pattern: RegExp, tensor?: string): void {
  assert.throws(() => readSafetensors(path), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.equal(e.file, path);
    assert.equal(e.tensor, tensor);
    assert.match(e.message, pattern);
    assert.ok(e.message.startsWith(path), `message names the file: ${e.message}`);
    return true;
  });
}

Deno.test("safetensors: round trip of every writable dtype, scalars, empty tensors and metadata", () => {
  withTmp((dir) => {
    const path = join(dir, "t.safetensors");
    const f32 = new Float32Array([1.5, -2.25, 3e-8, 1e30, -0, 7]);
    const halfExact = new Float32Array([1, -2.5, 0.5, 65504, 2 ** -24, -0]);
    const bf16Exact = new Float32Array([1, -2.5, 3.140625, 2 ** -130, 1e38 - 1e38 + 256]);
    writeSafetensors(path, {
      "w.f32": { dtype: "F32", shape: [2, 3], data: f32 },
      "w.f16": { dtype: "F16", shape: [6], data: halfExact },
      "w.bf16": { dtype: "BF16", shape: [5, 1], data: bf16Exact },
      "w.bf16raw": { dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0xc020]) },
      "i.i32": { dtype: "I32", shape: [3], data: new Int32Array([-2147483648, 0, 2147483647]) },
      "i.i32num": { dtype: "I32", shape: [2], data: [5, -6] },
      "i.i64": { dtype: "I64", shape: [2], data: new BigInt64Array([-(2n ** 40n), 3n]) },
      "u.u8": { dtype: "U8", shape: [3], data: new Uint8Array([0, 128, 255]) },
      scalar: { dtype: "F32", shape: [], data: new Float32Array([42]) },
      empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    }, { format: "pt", note: "héllo" });
    const st = readSafetensors(path);
    assert.deepEqual(st.metadata, { format: "pt", note: "héllo" });
    assert.deepEqual(
      new Set(st.names()),
      new Set(["w.f32", "w.f16", "w.bf16", "w.bf16raw", "i.i32", "i.i32num", "i.i64", "u.u8", "scalar", "empty"]),
    );
    assert.deepEqual(st.info("w.f32"), { dtype: "F32", shape: [2, 3], byteLength: 24 });
    assert.deepEqual(st.info("w.bf16"), { dtype: "BF16", shape: [5, 1], byteLength: 10 });
    assert.deepEqual(st.getF32("w.f32"), f32);
    assert.ok(Object.is(st.getF32("w.f32")[4], -0));
    assert.deepEqual(st.getF32("w.f16"), halfExact);
    assert.deepEqual(st.getF32("w.bf16"), bf16Exact);
    assert.deepEqual([...st.getF32("w.bf16raw")], [1, -2.5]);
    assert.deepEqual([...st.getI32("i.i32")], [-2147483648, 0, 2147483647]);
    assert.deepEqual([...st.getI32("i.i32num")], [5, -6]);
    assert.deepEqual([...new BigInt64Array(st.getRaw("i.i64").buffer)], [-(2n ** 40n), 3n]);
    assert.deepEqual([...st.getRaw("u.u8")], [0, 128, 255]);
    assert.deepEqual([...st.getF32("scalar")], [42]);
    assert.deepEqual(st.info("scalar").shape, []);
    assert.equal(st.getF32("empty").length, 0);
    // getF32 of F32 returns an aligned, independent copy.
    const a = st.getF32("w.f32");
    assert.equal(a.byteOffset % 4, 0);
    a[0] = 99;
    assert.equal(st.getF32("w.f32")[0], 1.5);
    // No temp files left behind.
    assert.deepEqual(readdirSync(dir), ["t.safetensors"]);
    assert.throws(() => st.getF32("nope"), (e: unknown) => e instanceof SafetensorsError && e.tensor === "nope");
  });
});

Deno.test("safetensors: byte layout matches HF (dtype-then-name order, compact JSON, space padding)", () => {
  withTmp((dir) => {
    const path = join(dir, "tiny.safetensors");
    // "a" is BF16, "b" is F32: HF sorts by descending dtype alignment first, so "b" comes first.
    writeSafetensors(path, {
      a: { dtype: "BF16", shape: [1], data: new Float32Array([1]) },
      b: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
    }, { format: "pt" });
    const bytes = new Uint8Array(readFileSync(path));
    const json =
      '{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}';
    assert.equal(json.length, 140); // counted: 140 bytes -> padded with 4 spaces to 144
    const expected = new Uint8Array(8 + 144 + 10);
    expected.set([144, 0, 0, 0, 0, 0, 0, 0], 0);
    expected.set(new TextEncoder().encode(json + "    "), 8);
    expected.set([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40], 152); // f32 1.0, 2.0
    expected.set([0x80, 0x3f], 160); // bf16 1.0
    assert.deepEqual(bytes, expected);
    assert.equal((8 + 144) % 8, 0);
    const h = readSafetensorsHeader(path);
    assert.equal(h.headerLength, 144);
    assert.equal(h.dataStart, 152);
    assert.deepEqual([...h.tensors.keys()], ["b", "a"]);
  });
});

Deno.test("safetensors: name order within a dtype is bytewise, no metadata key when none", () => {
  withTmp((dir) => {
    const path = join(dir, "o.safetensors");
    const z = (n: number) => ({ dtype: "F32" as const, shape: [n], data: new Float32Array(n) });
    writeSafetensors(path, { "h.10": z(1), "h.2": z(2), B: z(1), a: z(1) });
    const text = new TextDecoder().decode(readFileSync(path).subarray(8));
    assert.ok(!text.includes("__metadata__"));
    assert.deepEqual(readSafetensors(path).names(), ["B", "a", "h.10", "h.2"]);
  });
});

Deno.test("safetensors: bf16/f16 conversion of known values (RNE, subnormals, overflow, NaN)", () => {
  // float16
  assert.equal(numberToF16Bits(1.0), 0x3c00);
  assert.equal(numberToF16Bits(-2.5), 0xc100);
  assert.equal(numberToF16Bits(65504), 0x7bff);
  assert.equal(numberToF16Bits(65519), 0x7bff); // below the halfway point 65520
  assert.equal(numberToF16Bits(65520), 0x7c00); // tie rounds to even = inf
  assert.equal(numberToF16Bits(1e6), 0x7c00);
  assert.equal(numberToF16Bits(-Infinity), 0xfc00);
  assert.equal(numberToF16Bits(-0), 0x8000);
  assert.equal(numberToF16Bits(2 ** -14), 0x0400); // smallest normal
  assert.equal(numberToF16Bits(2 ** -24), 0x0001); // smallest subnormal
  assert.equal(numberToF16Bits(1023 * 2 ** -24), 0x03ff); // largest subnormal
  assert.equal(numberToF16Bits(2 ** -25), 0x0000); // tie -> even (0)
  assert.equal(numberToF16Bits(1.5 * 2 ** -25), 0x0001);
  assert.equal(numberToF16Bits(3 * 2 ** -25), 0x0002); // tie between 1 and 2 -> 2
  assert.equal(numberToF16Bits(5 * 2 ** -25), 0x0002); // tie between 2 and 3 -> 2
  assert.equal(numberToF16Bits(2 ** -26), 0x0000);
  assert.equal(numberToF16Bits(1023.5 * 2 ** -24), 0x0400); // rounds up into the normals
  assert.equal(numberToF16Bits(1 + 2 ** -11), 0x3c00); // tie -> even
  assert.equal(numberToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (up)
  assert.equal(numberToF16Bits(NaN) & 0x7e00, 0x7e00);
  assert.equal(f16BitsToNumber(0x0001), 2 ** -24);
  assert.equal(f16BitsToNumber(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16BitsToNumber(0x7bff), 65504);
  assert.equal(f16BitsToNumber(0xc100), -2.5);
  assert.ok(Number.isNaN(f16BitsToNumber(0x7e00)));
  assert.equal(f16BitsToNumber(0xfc00), -Infinity);
  // bfloat16
  assert.equal(numberToBf16Bits(1.0), 0x3f80);
  assert.equal(numberToBf16Bits(-2.5), 0xc020);
  assert.equal(numberToBf16Bits(65504), 0x4780); // 65504 rounds to 65536 in bf16
  assert.equal(numberToBf16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
  assert.equal(numberToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie -> even (up)
  assert.equal(numberToBf16Bits(2 ** -130), 0x0008); // f32 subnormal stays exact
  assert.equal(numberToBf16Bits(3.4028234663852886e38), 0x7f80); // f32 max rounds to inf
  assert.equal(numberToBf16Bits(-Infinity), 0xff80);
  assert.equal(numberToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  // array forms, both directions
  const vals = new Float32Array([1, -2.5, 65504, 2 ** -24, NaN, -0]);
  const h = f32ToF16(vals);
  assert.deepEqual([...h.slice(0, 4)], [0x3c00, 0xc100, 0x7bff, 0x0001]);
  const back = f16ToF32(h);
  assert.deepEqual([...back.slice(0, 4)], [1, -2.5, 65504, 2 ** -24]);
  assert.ok(Number.isNaN(back[4]!));
  assert.ok(Object.is(back[5], -0));
  const b = f32ToBf16(vals);
  assert.deepEqual([...b.slice(0, 3)], [0x3f80, 0xc020, 0x4780]);
  const bb = bf16ToF32(b);
  assert.deepEqual([...bb.slice(0, 3)], [1, -2.5, 65536]);
  assert.ok(Number.isNaN(bb[4]!));
  assert.ok(Object.is(bb[5], -0));
  // every f16 bit pattern survives f16 -> f32 -> f16 (NaNs stay NaN)
  const all = new Uint16Array(65536).map((_, i) => i);
  const rt = f32ToF16(f16ToF32(all));
  for (let i = 0; i < 65536; i++) {
    const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (isNaN) assert.ok((rt[i]! & 0x7c00) === 0x7c00 && (rt[i]! & 0x3ff) !== 0);
    else if (rt[i] !== i) assert.fail(`f16 0x${i.toString(16)} -> 0x${rt[i]!.toString(16)}`);
  }
});

Deno.test("safetensors: writing F32 data as F16/BF16 stores the rounded values", () => {
  withTmp((dir) => {
    const path = join(dir, "h.safetensors");
    const v = new Float32Array([1 + 2 ** -9, 70000, 2 ** -25 * 3]);
    writeSafetensors(path, { h: { dtype: "F16", shape: [3], data: v }, b: { dtype: "BF16", shape: [3], data: v } });
    const st = readSafetensors(path);
    assert.deepEqual([...st.getF32("h")], [1 + 2 ** -9, Infinity, 2 ** -23]);
    assert.deepEqual([...st.getF32("b")], [1, 70144, 2 ** -25 * 3]);
  });
});

Deno.test("safetensors: readSafetensorsHeader does not read tensor data (sparse 256 MB file)", () => {
  withTmp((dir) => {
    const path = join(dir, "big.safetensors");
    const n = 64 * 1024 * 1024;
    craft(path, {
      big: { dtype: "F32", shape: [n], data_offsets: [0, 4 * n] },
      small: { dtype: "F32", shape: [1], data_offsets: [4 * n, 4 * n + 4] },
    }, 0);
    const headerSize = readFileSync(path).length;
    truncateSync(path, headerSize + 4 * n + 4);
    const t0 = performance.now();
    const h = readSafetensorsHeader(path);
    assert.equal(h.tensors.get("big")!.byteLength, 4 * n);
    const st = readSafetensors(path);
    assert.deepEqual([...st.getF32("small")], [0]);
    assert.ok(performance.now() - t0 < 2000);
  });
});

Deno.test("safetensors: error paths name the file and tensor", () => {
  withTmp((dir) => {
    const p = (name: string) => join(dir, name);
    const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

    writeFileSync(p("short"), new Uint8Array([1, 2, 3, 4]));
    expectError(p("short"), /file is 4 bytes, shorter than the 8-byte header length/);

    const trunc = new Uint8Array(100);
    new DataView(trunc.buffer).setBigUint64(0, 1234n, true);
    writeFileSync(p("trunc"), trunc);
    expectError(p("trunc"), /truncated safetensors header: header says 1234 bytes but file has 100$/);

    craft(p("notjson"), "{not json", 0);
    expectError(p("notjson"), /header is not valid JSON/);

    craft(p("array"), "[1,2]", 0);
    expectError(p("array"), /header JSON is not an object/);

    const bad = new Uint8Array(16);
    new DataView(bad.buffer).setBigUint64(0, 8n, true);
    bad.set([0x7b, 0xff, 0xfe, 0x7d, 0x20, 0x20, 0x20, 0x20], 8);
    writeFileSync(p("utf8"), bad);
    expectError(p("utf8"), /not valid UTF-8/);

    for (const key of ["dtype", "shape", "data_offsets"]) {
      const entry: Record<string, unknown> = { ...ok };
      delete entry[key];
      craft(p(`missing-${key}`), { w: entry }, 8);
      expectError(p(`missing-${key}`), new RegExp(`tensor "w": entry is missing "${key}"`), "w");
    }

    craft(p("notobj"), { w: 3 }, 8);
    expectError(p("notobj"), /entry is not an object/, "w");

    craft(p("badshape"), { w: { ...ok, shape: [2, -1] } }, 8);
    expectError(p("badshape"), /"shape" must be an array of non-negative integers/, "w");

    craft(p("badoff"), { w: { ...ok, data_offsets: [0] } }, 8);
    expectError(p("badoff"), /"data_offsets" must be \[begin, end\]/, "w");

    craft(p("reversed"), { w: { ...ok, data_offsets: [8, 0] } }, 8);
    expectError(p("reversed"), /begin > end/, "w");

    craft(p("outside"), { w: { ...ok, data_offsets: [4, 12] } }, 8);
    expectError(p("outside"), /data_offsets \[4, 12\] lie outside the data buffer \(8 bytes\)/, "w");

    craft(p("length"), { w: { ...ok, shape: [3] } }, 8);
    expectError(p("length"), /byte length 8 .* != 12 = prod\(\[3\]\) \* 4 bytes \(F32\)/, "w");

    craft(p("overlap"), { a: ok, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 8);
    expectError(p("overlap"), /overlap tensor "a"/, "b");

    craft(p("dtype"), { w: { ...ok, dtype: "Q4_K" } }, 8);
    expectError(p("dtype"), /unsupported dtype "Q4_K"/, "w");

    craft(p("meta"), { __metadata__: { epoch: 3 }, w: ok }, 8);
    expectError(p("meta"), /"__metadata__"."epoch" must be a string/);

    expectError(p("does-not-exist"), /cannot open/);

    // Empty tensors overlap nothing; trailing padding spaces are fine.
    craft(p("emptyok"), { a: ok, e: { dtype: "F32", shape: [0], data_offsets: [4, 4] } }, 8);
    assert.deepEqual(readSafetensors(p("emptyok")).names(), ["a", "e"]);
  });
});

Deno.test("safetensors: write errors are SafetensorsErrors and leave no temp file", () => {
  withTmp((dir) => {
    const path = join(dir, "w.safetensors");
    assert.throws(
      () => writeSafetensors(path, { w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
      (e: unknown) =>
        e instanceof SafetensorsError && e.tensor === "w" &&
        /data has 2 elements but shape \[3\] needs 3/.test(e.message),
    );
    assert.throws(
      () => writeSafetensors(path, { w: { dtype: "I32", shape: [1], data: [1.5] } }),
      /value 1.5 at index 0 is not an int32/,
    );
    assert.throws(() => writeSafetensors(join(dir, "nodir", "x.safetensors"), {}), SafetensorsError);
    assert.deepEqual(readdirSync(dir), []);
    assert.ok(!existsSync(path));
    // Overwrite is atomic replace.
    writeSafetensors(path, { w: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
    writeSafetensors(path, { w: { dtype: "F32", shape: [1], data: new Float32Array([2]) } });
    assert.deepEqual([...readSafetensors(path).getF32("w")], [2]);
    assert.deepEqual(readdirSync(dir), ["w.safetensors"]);
  });
});

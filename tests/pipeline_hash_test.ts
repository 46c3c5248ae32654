/** Canonical JSON and config hashing (the basis of every stage's cache hash). */
import assert from "node:assert/strict";
import { canonicalJson, hashConfig } from "../pipeline/hash.ts";

Deno.test("canonicalJson() sorts keys so hashConfig() ignores key order", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [1, { z: 0, y: null }], c: "x" }, u: undefined }),
    '{"a":{"c":"x","d":[1,{"y":null,"z":0}]},"b":1}',
  );
  assert.equal(hashConfig({ a: 1, b: 2 }), hashConfig({ b: 2, a: 1 }));
  assert.notEqual(hashConfig({ a: 1 }), hashConfig({ a: 2 }));
  assert.match(hashConfig({}), /^[0-9a-f]{64}$/);
  assert.throws(() => canonicalJson({ lr: NaN }), (e: unknown) => e instanceof TypeError && /\$\.lr/.test(e.message));
});

/** io/atomic.ts: the one crash-safe writer (sync and async), and the temp-name pattern it uses. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseTempName, tempPathFor, writeFileAtomic, writeFileAtomicSync, writeJsonAtomic } from "../io/atomic.ts";

Deno.test("writeFileAtomic() replaces the file and leaves no temp files", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "a.json");
  await writeFileAtomic(path, "old");
  await writeJsonAtomic(path, { b: 1 });
  await writeFileAtomic(join(dir, "bytes.bin"), new Uint8Array([1, 2, 3]));
  assert.equal(await Deno.readTextFile(path), '{\n  "b": 1\n}\n');
  assert.deepEqual(await Deno.readFile(join(dir, "bytes.bin")), new Uint8Array([1, 2, 3]));
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["a.json", "bytes.bin"]);
  // A failed write (missing folder) leaves nothing behind either.
  await assert.rejects(() => writeFileAtomic(join(dir, "missing", "x.txt"), "x"), Deno.errors.NotFound);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["a.json", "bytes.bin"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("writeFileAtomicSync() writes chunks in order; parseTempName() recognises the temp names", () => {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "x.bin");
  writeFileAtomicSync(path, [new Uint8Array([1]), new Uint8Array([2, 3])]);
  assert.deepEqual(Deno.readFileSync(path), new Uint8Array([1, 2, 3]));
  const tmp = tempPathFor(path).split("/").pop()!;
  assert.deepEqual(parseTempName(tmp), { pid: Deno.pid });
  assert.deepEqual(parseTempName(".model.tmp-123"), { pid: 123 }); // checkpoint folder swaps
  assert.equal(parseTempName("model.tmp-123"), undefined); // not hidden: not ours
  assert.equal(parseTempName(".notes.tmp-abc"), undefined);
  Deno.removeSync(dir, { recursive: true });
});

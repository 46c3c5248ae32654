/**
 * The CUDA backend answers every bad-argument case of tests/_arg_cases.ts (generated from
 * cuda/include/lte.h: unknown and reserved dtypes, negative and zero sizes, zero and negative
 * floats, each pointer NULL) exactly as the CPU reference does: the same status and the same
 * message, apart from the backend's own name. Where one backend implements a dtype or op the other
 * does not (OK on one, UNSUPPORTED on the other) the case is listed, not failed. Both backends write their checks separately
 * (cuda/cpu/cpu_common.h, cuda/cuda/common.cuh); this is what keeps them in step.
 *
 * Runs only where the CUDA library and a GPU are available; LTE_REQUIRE_CUDA=1 (deno task
 * test:gpu) turns a missing GPU into a failure.
 */
import assert from "node:assert/strict";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { Status } from "../../ffi/symbols.ts";
import { argCases, normalise, runCase } from "../_arg_cases.ts";

const required = Deno.env.get("LTE_REQUIRE_CUDA") === "1";
const haveCuda = backendAvailable("cuda");
if (required && !haveCuda) {
  Deno.test("CUDA backend is available", () => {
    getBackend("cuda"); // throws the real reason
  });
}

Deno.test({
  name: "CUDA and CPU give the same status and message for every bad argument",
  ignore: !haveCuda,
  fn() {
    const cpu = getBackend("cpu");
    const cuda = getBackend("cuda");
    const cases = argCases();
    const diffs: string[] = [];
    const capability: string[] = [];
    for (const c of cases) {
      const a = runCase(cpu, c);
      const b = runCase(cuda, c);
      if (a.status === b.status && normalise(a.message, "cpu") === normalise(b.message, "cuda")) continue;
      const line = `${c.fn} (${c.label}): cpu ${a.status} '${a.message}' | cuda ${b.status} '${b.message}'`;
      // One backend implements a dtype or op that the other does not: a capability difference,
      // listed but not a failure.
      const pair = [a.status, b.status].sort().join(",");
      if (pair === `${Status.OK},${Status.UNSUPPORTED}`) capability.push(line);
      else diffs.push(line);
    }
    console.log(`${cases.length} cases, ${diffs.length} differences, ${capability.length} capability differences`);
    for (const line of capability) console.log(`  capability: ${line}`);
    assert.deepEqual(diffs, [], `\n${diffs.length} of ${cases.length} cases differ:\n` + diffs.join("\n"));
  },
});

/**
 * `deno task loadtest` at CI size: 64 concurrent clients, mixed streaming and non-streaming
 * requests against a server process running a tiny LTE model on the CPU; every request must
 * succeed (the load test exits 1 on any failed request).
 */
import assert from "node:assert/strict";

Deno.test("loadtest: 64 concurrent clients, mixed streaming, 0 failed requests (CPU, tiny model)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "bench/loadtest.ts",
      "--clients",
      "64",
      "--requests",
      "96",
      "--max-tokens",
      "6",
      "--timeout",
      "240",
    ],
    env: { OMP_NUM_THREADS: "1", OMP_WAIT_POLICY: "passive" },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${stdout}\n${stderr}`);
  assert.match(stdout, /96\/96 ok, failed 0/);
  assert.match(stdout, /^failed requests: 0$/m);
});

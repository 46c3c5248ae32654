/**
 * `deno task ok`: what a reviewer checks, in one command. Runs every step even when an earlier
 * one fails (so CI always reports the test summary), then prints one line per step and exits 1 if
 * any step failed:
 *
 *   fmt    deno fmt --check          (formatting of every file deno fmt covers)
 *   lint   deno lint
 *   check  deno check .              (type-check of every .ts: mod.ts, tests/, examples/, scripts/, bench/, ...)
 *   test   deno task test            (builds the native libraries, runs every CPU test)
 *
 *   deno task ok [--skip-tests]
 *
 * The last line is `ok: all 4 steps passed` or `ok: K of N steps failed: <names>`; .ci/run adds K
 * to the failed count of the test summary.
 *
 * @module
 */
const skipTests = Deno.args.includes("--skip-tests");
const deno = Deno.execPath();
const steps: { name: string; args: string[] }[] = [
  { name: "fmt", args: ["fmt", "--check"] },
  { name: "lint", args: ["lint"] },
  { name: "check", args: ["check", "."] },
];
if (!skipTests) steps.push({ name: "test", args: ["task", "test"] });

const results: { name: string; ok: boolean; seconds: number }[] = [];
for (const step of steps) {
  console.log(`\n== ok: ${step.name}: deno ${step.args.join(" ")}`);
  const t0 = performance.now();
  const { code } = await new Deno.Command(deno, { args: step.args, stdout: "inherit", stderr: "inherit" }).output();
  results.push({ name: step.name, ok: code === 0, seconds: (performance.now() - t0) / 1000 });
}

console.log("");
for (const r of results) {
  console.log(`ok: ${r.name.padEnd(5)} ${r.ok ? "passed" : "FAILED"} (${r.seconds.toFixed(1)} s)`);
}
const failed = results.filter((r) => !r.ok);
if (failed.length === 0) console.log(`ok: all ${results.length} steps passed`);
else console.log(`ok: ${failed.length} of ${results.length} steps failed: ${failed.map((r) => r.name).join(", ")}`);
Deno.exit(failed.length === 0 ? 0 : 1);

/**
 * `deno task serve pipeline.yaml`: runs the pipeline (a tiny fine-tune) and then its serve stage,
 * which answers requests until SIGINT; the stage ends as `ended` (cache: false) and the process
 * exits 0.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

Deno.test({
  name: "serve stage: deno task serve file.yaml trains, serves, and stops on SIGINT with exit 0",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = mkdtempSync(join(tmpdir(), "lte-serve-stage-"));
    const yaml = join(dir, "p.yaml");
    writeFileSync(
      yaml,
      `name: servetest
seed: 1
run_dir: ${join(dir, "run")}
stages:
  - name: train
    type: fine-tune
    model: { family: llama, n_layer: 1, d_model: 32, n_head: 4, n_kv_head: 2, d_ff: 64, max_seq: 32 }
    tokenizer: { type: bytes, eos: "<|endoftext|>" }
    data: { corpus: { files: [${Deno.cwd()}/tests/fixtures/corpus/a.txt, ${Deno.cwd()}/tests/fixtures/corpus/b.txt] }, seq_len: 4, val_fraction: 0.3 }
    training: { steps: 3, batch_size: 2, final_eval_batches: 1 }
  - name: serve
    type: serve
    from: train
    port: 8080
`,
    );
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "stages/serve_cli.ts", yaml, "--port", "0", "--max-batch", "2"],
        stdout: "piped",
        stderr: "piped",
        env: { OMP_NUM_THREADS: "1", OMP_WAIT_POLICY: "passive" },
      }).spawn();
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let log = "", url = "";
      while (!log.includes("ready in")) {
        const { done, value } = await reader.read();
        if (done) break;
        log += value;
        url ||= log.match(/listening on (http:\/\/[\d.:]+)/)?.[1] ?? "";
      }
      assert.ok(url, log);
      const props = await (await fetch(`${url}/props`)).json();
      assert.equal(props.slots, 2, "the --max-batch flag reached the stage as an override");
      assert.equal(props.sparse, false);
      const r = await fetch(`${url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: "Call", max_tokens: 4 }),
      });
      assert.equal(r.status, 200);
      assert.equal((await r.json()).usage.completion_tokens > 0, true);
      child.kill("SIGINT");
      const status = await child.status;
      while (!(await reader.read()).done) { /* drain */ }
      await child.stdout.cancel();
      assert.equal(status.code, 0, log);
      const stage = JSON.parse(readFileSync(join(dir, "run", "stages", "serve", "stage.json"), "utf8"));
      assert.equal(stage.status, "ended");
      assert.equal(stage.summary.requests, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

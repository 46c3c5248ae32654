/**
 * `serve`: serve an upstream stage's model folder over the OpenAI-compatible HTTP API (serve/),
 * until the pipeline is stopped (Ctrl-C / SIGTERM: in-flight requests finish within
 * `shutdown_grace_s`, the rest are cancelled). It is never cached (`cache: false`): each run serves
 * anew, and its end is recorded as `ended`, not `complete`.
 *
 * `deno task serve <model dir | pipeline.yaml>` is stages/serve_cli.ts.
 *
 * @example
 * ```yaml
 * - name: serve
 *   type: serve
 *   from: adapt          # a stage whose folder holds model/ (config.json, model.safetensors, ...)
 *   port: 8080
 *   max_batch: 8
 * ```
 * @module
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { resolveDevice } from "../tensor/mod.ts";
import type { StageDefinition } from "../pipeline/stage.ts";
import { registerStage } from "../pipeline/registry.ts";
import { SERVE_DEFAULTS, type ServeConfig, startServing } from "../serve/app.ts";

const Config = z.strictObject({
  from: z.string().describe("upstream stage whose folder holds the model"),
  model: z.string().default("model").describe("model folder inside the upstream stage's folder"),
  host: z.string().default(SERVE_DEFAULTS.host),
  port: z.number().int().min(0).max(65535).default(SERVE_DEFAULTS.port),
  device: z.enum(["cpu", "cuda", "auto"]).nullable().default(null).describe("default: the pipeline's device"),
  dtype: z.enum(["f32", "f16", "bf16"]).default(SERVE_DEFAULTS.dtype),
  kv_dtype: z.enum(["f32", "f16", "bf16", "i8", "auto"]).default(SERVE_DEFAULTS.kvDtype).describe(
    "the KV cache's dtype; i8: 8-bit with per-position scales (cuda: head sizes 8-256, powers of two); auto: the weights'",
  ),
  sparse: z.union([z.boolean(), z.literal("auto")]).default(SERVE_DEFAULTS.sparse),
  max_batch: z.number().int().min(1).default(SERVE_DEFAULTS.maxBatch),
  max_context: z.number().int().min(2).nullable().default(SERVE_DEFAULTS.maxContext),
  max_queue: z.number().int().min(0).default(SERVE_DEFAULTS.maxQueue),
  default_max_tokens: z.number().int().min(1).default(SERVE_DEFAULTS.defaultMaxTokens),
  max_body_bytes: z.number().int().min(64).default(SERVE_DEFAULTS.maxBodyBytes),
  shutdown_grace_s: z.number().min(0).default(SERVE_DEFAULTS.shutdownGraceS),
  lookahead: z.union([z.boolean(), z.literal("auto")]).default(SERVE_DEFAULTS.lookahead).describe(
    "decode one step ahead in the batch loop; auto: on for cuda",
  ),
});
type Config = z.infer<typeof Config>;

/** The model folder of an upstream stage folder: `<dir>/<model>`, or `<dir>` itself if it is one. */
export function modelFolderOf(stageDir: string, sub: string): string {
  const nested = join(stageDir, sub);
  if (existsSync(join(nested, "config.json"))) return nested;
  if (existsSync(join(stageDir, "config.json"))) return stageDir;
  throw new Error(`${nested}: no model folder (no config.json); the stage named in "from" must write a model`);
}

export const serveStage: StageDefinition<Config> = {
  type: "serve",
  description: "Serve a model over an OpenAI-compatible HTTP API with a chat page (runs until stopped)",
  schema: Config,
  inputs: (c) => [c.from],
  cache: false,
  async run(c, ctx) {
    const modelDir = modelFolderOf(ctx.inputs[c.from]!.dir, c.model);
    const cfg: ServeConfig = {
      modelDir,
      host: c.host,
      port: c.port,
      device: resolveDevice(c.device ?? ctx.pipeline.device),
      dtype: c.dtype,
      kvDtype: c.kv_dtype,
      sparse: c.sparse,
      maxBatch: c.max_batch,
      maxContext: c.max_context,
      maxQueue: c.max_queue,
      maxBodyBytes: c.max_body_bytes,
      defaultMaxTokens: c.default_max_tokens,
      shutdownGraceS: c.shutdown_grace_s,
      lookahead: c.lookahead,
    };
    const serving = startServing(cfg, { log: (m) => ctx.log(m) });
    try {
      await serving.ready;
    } catch (e) {
      await serving.stop();
      throw e;
    }
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await serving.stop();
    return { url: serving.url, model_dir: modelDir, ...serving.app.stats() };
  },
};
registerStage(serveStage);

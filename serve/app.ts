/**
 * Starts the server: listen first (so `/health` answers 503 "Loading model" at once), load the
 * engine, then switch to ready. Shared by `deno task serve` (serve/cli.ts) and the `serve` stage.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { Engine } from "../engine/mod.ts";
import { readCheckpointConfig } from "../models/checkpoint.ts";
import { readLteMeta } from "../models/lte_artifacts.ts";
import { loadChatTemplate } from "./chat_template.ts";
import type { EngineOptions, ServeEngine } from "./engine_api.ts";
import { LteServer } from "./server.ts";

/** Everything the server needs; the CLI and the serve stage fill it. */
export interface ServeConfig {
  /** A model folder: config.json, model.safetensors, tokenizer files; lte.json + routers for LTE. */
  modelDir: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  device: "cpu" | "cuda";
  dtype: "f32" | "f16" | "bf16";
  /** The KV cache's dtype (engine option `kvDtype`); "auto" or absent: the weights'. */
  kvDtype?: "f32" | "f16" | "bf16" | "i8" | "auto";
  /** "auto": sparse when the folder has LTE routers. */
  sparse: boolean | "auto";
  maxBatch: number;
  /** null: the model's max_seq. */
  maxContext: number | null;
  maxQueue: number;
  maxBodyBytes: number;
  defaultMaxTokens: number;
  /** On SIGINT/SIGTERM, in-flight requests get this long to finish before they are cancelled. */
  shutdownGraceS: number;
  /**
   * Decode one step ahead in the batch loop (engine option `lookahead`): the next step runs while
   * the server handles this step's tokens. "auto": the engine's default (on for CUDA). Optional
   * here; the CLI and the serve stage always fill it.
   */
  lookahead?: boolean | "auto";
}

/** Defaults of every optional setting. */
export const SERVE_DEFAULTS = {
  host: "127.0.0.1",
  port: 8080,
  dtype: "f32",
  kvDtype: "auto",
  sparse: "auto",
  maxBatch: 8,
  maxContext: null,
  maxQueue: 64,
  maxBodyBytes: 1 << 20,
  defaultMaxTokens: 256,
  shutdownGraceS: 10,
  lookahead: "auto",
} as const;

/** A model folder or settings the server cannot use. */
export class ServeConfigError extends Error {
  override name = "ServeConfigError";
}

/** A running server. */
export interface Serving {
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  app: LteServer;
  /** Resolves when the model is loaded; rejects with the load error (the server stays up, /health 500). */
  ready: Promise<void>;
  /** Graceful stop: new requests 503, in-flight ones finish (up to the grace time) or are cancelled. */
  stop(): Promise<void>;
  /** Resolves once the HTTP server has closed. */
  finished: Promise<void>;
}

/** Engine options and /props sparsity info for a model folder (checks the folder first). */
export function resolveModel(cfg: ServeConfig): { opts: EngineOptions; props: Record<string, unknown> } {
  const dir = resolve(cfg.modelDir);
  if (!existsSync(join(dir, "config.json"))) {
    throw new ServeConfigError(`${dir}: not a model folder (no config.json; expected config.json + model.safetensors)`);
  }
  const model = readCheckpointConfig(dir);
  const meta = readLteMeta(dir, model);
  const hasRouters = meta !== null && meta.routers !== null && meta.routers !== undefined;
  if (cfg.sparse === true && !hasRouters) {
    throw new ServeConfigError(
      `${dir}: sparse serving needs LTE routers (lte.json with "routers"), but ${
        meta ? "lte.json has none (run router-train)" : "there is no lte.json"
      }; serve it dense (sparse: false)`,
    );
  }
  const sparse = cfg.sparse === "auto" ? hasRouters : cfg.sparse;
  const maxContext = cfg.maxContext ?? model.max_seq;
  if (maxContext > model.max_seq) {
    throw new ServeConfigError(`max_context ${maxContext} is larger than the model's max_seq ${model.max_seq}`);
  }
  const opts: EngineOptions = { device: cfg.device, dtype: cfg.dtype, sparse, maxBatch: cfg.maxBatch, maxContext };
  if (typeof cfg.lookahead === "boolean") opts.lookahead = cfg.lookahead;
  if (cfg.kvDtype !== undefined && cfg.kvDtype !== "auto") opts.kvDtype = cfg.kvDtype;
  const props: Record<string, unknown> = {
    device: cfg.device,
    dtype: cfg.dtype,
    kv_dtype: opts.kvDtype ?? cfg.dtype,
    model_dir: dir,
    family: model.family,
    // the engine's rule when the setting is "auto": on for CUDA
    lookahead: opts.lookahead ?? cfg.device === "cuda",
    sparsity: sparse && meta
      ? {
        method: meta.method ?? "lte",
        expert_size: meta.expert_size,
        experts_per_layer: meta.experts_per_layer,
        tau: meta.tau,
        routers: meta.routers,
      }
      : null,
  };
  return { opts, props };
}

/**
 * Listens on `cfg.host:cfg.port`, then loads the model in the background.
 *
 * @throws {ServeConfigError} For an unusable model folder or settings (before listening).
 */
export function startServing(
  cfg: ServeConfig,
  hooks: { log?: (m: string) => void } = {},
): Serving {
  const log = hooks.log ?? ((m: string) => console.error(m));
  const { opts, props } = resolveModel(cfg);
  const dir = resolve(cfg.modelDir);
  const app = new LteServer({
    maxQueue: cfg.maxQueue,
    maxBodyBytes: cfg.maxBodyBytes,
    defaultMaxTokens: cfg.defaultMaxTokens,
    aliases: [basename(dir)],
    props,
    log,
  });
  let url = "";
  const http = Deno.serve({
    hostname: cfg.host,
    port: cfg.port,
    onListen: ({ hostname, port }) => {
      url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
    },
    onError: (e) => {
      log(`serve: request error: ${(e as Error).message}`);
      return new Response(
        JSON.stringify({ error: { message: "Internal server error", type: "server_error", code: "internal_error" } }),
        {
          status: 500,
          headers: { "content-type": "application/json" },
        },
      );
    },
  }, app.handler);
  const addr = http.addr as Deno.NetAddr;
  url ||= `http://${addr.hostname}:${addr.port}`;
  log(
    `serve: listening on ${url} (loading ${dir}: ${opts.device}, ${opts.dtype}, ${
      opts.sparse ? "LTE sparse" : "dense"
    }${props.lookahead ? ", lookahead" : ""})`,
  );
  const t0 = performance.now();
  const ready = (async () => {
    try {
      // Engine.load reads and uploads synchronously: give probes already connected their 503 first.
      await new Promise((r) => setTimeout(r, 10));
      const engine: ServeEngine = await Engine.load(dir, opts);
      app.setEngine(engine, loadChatTemplate(dir));
      log(
        `serve: model "${engine.modelName}" ready in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
          `(context ${engine.contextSize}, ${engine.maxBatch} slots${
            engine.expertsPerLayer ? `, ${engine.expertsPerLayer} experts/layer` : ""
          }); open ${url}/ for the chat page`,
      );
    } catch (e) {
      app.setLoadError((e as Error).message);
      throw e;
    }
  })();
  ready.catch(() => {}); // callers await `ready` themselves; the server stays up either way
  let stopping: Promise<void> | null = null;
  const stop = () =>
    stopping ??= (async () => {
      log(`serve: shutting down (in-flight requests get ${cfg.shutdownGraceS} s)`);
      await ready.catch(() => {});
      await app.shutdown(cfg.shutdownGraceS * 1000);
      await http.shutdown();
      log("serve: stopped");
    })();
  return { url, app, ready, stop, finished: http.finished };
}

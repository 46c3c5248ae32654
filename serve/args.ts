/**
 * The command line of `deno task serve`:
 *
 * ```
 * deno task serve <model dir | pipeline.yaml> [--host 127.0.0.1] [--port 8080] [--device cpu|cuda|auto]
 *   [--dtype f32|f16|bf16] [--sparse | --dense] [--max-batch 8] [--max-context N] [--max-queue 64]
 *   [--max-tokens 256] [--max-body 1048576] [--grace 10]
 * ```
 *
 * @module
 */
import { SERVE_DEFAULTS } from "./app.ts";

/** Bad command line. */
export class ServeUsageError extends Error {
  override name = "ServeUsageError";
}

/** Parsed `deno task serve` arguments. */
export interface ServeArgs {
  target: string | null;
  help: boolean;
  host: string;
  port: number;
  device: "cpu" | "cuda" | "auto";
  dtype: "f32" | "f16" | "bf16";
  /** The KV cache's dtype; "auto": the weights' (engine option `kvDtype`). */
  kvDtype: "f32" | "f16" | "bf16" | "i8" | "auto";
  sparse: boolean | "auto";
  maxBatch: number;
  maxContext: number | null;
  maxQueue: number;
  defaultMaxTokens: number;
  maxBodyBytes: number;
  shutdownGraceS: number;
  lookahead: boolean | "auto";
  /** Flags given explicitly (for the pipeline route: they become overrides of the serve stage). */
  given: Set<string>;
}

export const SERVE_USAGE = `Usage: deno task serve <model dir | pipeline.yaml> [options]

Serve a model folder (config.json + model.safetensors + tokenizer; LTE-sparse when it has lte.json
with routers) over an OpenAI-compatible HTTP API with a chat page at /. Given a pipeline YAML,
run it (upstream stages are cached) up to and including its serve stage.

Options:
  --host H          address to bind (default 127.0.0.1)
  --port N          port (default 8080; 0 picks a free one)
  --device D        cpu | cuda | auto (default cpu)
  --dtype T         f32 | f16 | bf16 (default f32)
  --kv-dtype T      KV cache: f32 | f16 | bf16 | i8 (8-bit, per-position scales) |
                    auto (default: the weights' dtype)
  --sparse          LTE-sparse FFN (needs routers); --dense: dense FFN (default: sparse when routers exist)
  --max-batch N     engine slots decoded together (default 8)
  --max-context N   context size in tokens (default: the model's max_seq)
  --max-queue N     requests waiting for a slot before 429 (default 64)
  --max-tokens N    max_tokens when a request gives none (default 256)
  --max-body B      largest request body in bytes (default 1048576)
  --grace S         seconds in-flight requests get on SIGINT/SIGTERM (default 10)
  --lookahead       decode one step ahead (the next step runs while this one's tokens are sent);
                    --no-lookahead: off (default: on for cuda, off for cpu)
  -h, --help        show this help`;

function int(flag: string, v: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new ServeUsageError(`${flag}: expected an integer >= ${min}, got "${v}"`);
  return n;
}

/** Parses the arguments of `deno task serve`. @throws {ServeUsageError} On a bad flag or value. */
export function parseServeArgs(args: string[]): ServeArgs {
  const out: ServeArgs = {
    target: null,
    help: false,
    host: SERVE_DEFAULTS.host,
    port: SERVE_DEFAULTS.port,
    device: "cpu",
    dtype: SERVE_DEFAULTS.dtype,
    kvDtype: SERVE_DEFAULTS.kvDtype,
    sparse: SERVE_DEFAULTS.sparse,
    maxBatch: SERVE_DEFAULTS.maxBatch,
    maxContext: SERVE_DEFAULTS.maxContext,
    maxQueue: SERVE_DEFAULTS.maxQueue,
    defaultMaxTokens: SERVE_DEFAULTS.defaultMaxTokens,
    maxBodyBytes: SERVE_DEFAULTS.maxBodyBytes,
    shutdownGraceS: SERVE_DEFAULTS.shutdownGraceS,
    lookahead: SERVE_DEFAULTS.lookahead,
    given: new Set(),
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = () => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) throw new ServeUsageError(`${flag}: missing value`);
      return v;
    };
    if (flag.startsWith("-")) out.given.add(flag);
    switch (flag) {
      case "-h":
      case "--help":
        out.help = true;
        break;
      case "--host":
        out.host = value();
        break;
      case "--port":
        out.port = int(flag, value(), 0);
        if (out.port > 65535) throw new ServeUsageError(`--port: ${out.port} is not a port (0..65535)`);
        break;
      case "--device": {
        const v = value();
        if (v !== "cpu" && v !== "cuda" && v !== "auto") {
          throw new ServeUsageError(`--device: expected cpu, cuda or auto, got "${v}"`);
        }
        out.device = v;
        break;
      }
      case "--dtype": {
        const v = value();
        if (v !== "f32" && v !== "f16" && v !== "bf16") {
          throw new ServeUsageError(`--dtype: expected f32, f16 or bf16, got "${v}"`);
        }
        out.dtype = v;
        break;
      }
      case "--kv-dtype": {
        const v = value();
        if (v !== "f32" && v !== "f16" && v !== "bf16" && v !== "i8" && v !== "auto") {
          throw new ServeUsageError(`--kv-dtype: expected f32, f16, bf16, i8 or auto, got "${v}"`);
        }
        out.kvDtype = v;
        break;
      }
      case "--sparse":
        out.sparse = true;
        break;
      case "--dense":
        out.sparse = false;
        break;
      case "--lookahead":
        out.lookahead = true;
        break;
      case "--no-lookahead":
        out.lookahead = false;
        break;
      case "--max-batch":
        out.maxBatch = int(flag, value(), 1);
        break;
      case "--max-context":
        out.maxContext = int(flag, value(), 2);
        break;
      case "--max-queue":
        out.maxQueue = int(flag, value(), 0);
        break;
      case "--max-tokens":
        out.defaultMaxTokens = int(flag, value(), 1);
        break;
      case "--max-body":
        out.maxBodyBytes = int(flag, value(), 64);
        break;
      case "--grace":
        out.shutdownGraceS = int(flag, value(), 0);
        break;
      default:
        if (flag.startsWith("-")) throw new ServeUsageError(`Unknown option "${flag}" (see --help)`);
        if (out.target !== null) throw new ServeUsageError(`Two targets given: "${out.target}" and "${arg}"`);
        out.target = arg;
    }
  }
  return out;
}

/**
 * The OpenAI-compatible HTTP server: routes, request validation, SSE streaming, errors.
 *
 * | endpoint                    | what                                                                   |
 * | --------------------------- | ---------------------------------------------------------------------- |
 * | `GET /`                     | the chat page (web/app.ts, bundled with esbuild)                        |
 * | `GET /health`               | 503 `{"error": ...Loading model}` while loading, then 200 `{"status":"ok"}` |
 * | `GET /v1/models`            | the one served model                                                   |
 * | `POST /v1/completions`      | text completion, `stream: true` for SSE                                |
 * | `POST /v1/chat/completions` | chat completion (model chat template or the plain one)                 |
 * | `GET /metrics`              | Prometheus text                                                        |
 * | `GET /props`                | context size, slots, queue, sparsity config                            |
 *
 * No request can stop the server: every handler error becomes a JSON error response.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { ApiError, badRequest } from "./errors.ts";
import { ChatRequest, CompletionRequest, formatZodError } from "./schemas.ts";
import type { ChatTemplate } from "./chat_template.ts";
import type { SamplingParams, ServeEngine } from "./engine_api.ts";
import { Metrics } from "./metrics.ts";
import { QueueFullError, Scheduler, type SequenceEvent, type SequenceStats, ShuttingDownError } from "./scheduler.ts";
import { pageHtml, pageScript } from "./page.ts";
import type { z } from "zod";

/** Server settings. */
export interface ServerOptions {
  /** Requests that may wait for a slot before new ones get 429. @default {64} */
  maxQueue?: number;
  /** Largest accepted request body in bytes (413 above). @default {1048576} */
  maxBodyBytes?: number;
  /** max_tokens when a request gives none (capped by the context left). @default {256} */
  defaultMaxTokens?: number;
  /** Extra names accepted in a request's `model` besides the engine's model name. */
  aliases?: string[];
  /** Shown by /props: how the engine was built (device, dtype, sparse) and the LTE config. */
  props?: Record<string, unknown>;
  /** Log function for server events. @default console.error */
  log?: (message: string) => void;
}

interface Ready {
  engine: ServeEngine;
  scheduler: Scheduler;
  metrics: Metrics;
  chat: ChatTemplate;
  created: number;
  names: string[];
}

const JSON_HEADERS = { "content-type": "application/json" };

function json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

/** The OpenAI `usage` object plus the realized FFN sparsity of the response. */
export function usageOf(s: SequenceStats): Record<string, unknown> {
  return {
    prompt_tokens: s.promptTokens,
    completion_tokens: s.completionTokens,
    total_tokens: s.promptTokens + s.completionTokens,
    ffn_sparsity: s.ffnSparsity === null ? null : Math.round(s.ffnSparsity * 1e4) / 1e4,
    ffn_active_experts_per_layer: s.activeExpertsPerLayer?.map((v) => round(v)) ?? null,
  };
}

/** Per-response timings (llama.cpp-style `timings`). */
export function timingsOf(s: SequenceStats): Record<string, number> {
  return {
    queue_ms: round(s.queueMs),
    prompt_ms: round(s.promptMs),
    ttft_ms: round(s.ttftMs),
    generation_ms: round(s.generationMs),
    total_ms: round(s.totalMs),
    tokens_per_second: round(s.tokensPerSecond),
  };
}

/** The HTTP application; `handler` is what `Deno.serve` calls. */
export class LteServer {
  readonly opts: Required<Omit<ServerOptions, "aliases" | "props">> & Pick<ServerOptions, "aliases" | "props">;
  #ready: Ready | null = null;
  #loadError: string | null = null;
  #closing = false;

  constructor(opts: ServerOptions = {}) {
    this.opts = {
      maxQueue: opts.maxQueue ?? 64,
      maxBodyBytes: opts.maxBodyBytes ?? 1 << 20,
      defaultMaxTokens: opts.defaultMaxTokens ?? 256,
      aliases: opts.aliases,
      props: opts.props,
      log: opts.log ?? ((m) => console.error(m)),
    };
  }

  /** Whether the model is loaded. */
  get ready(): boolean {
    return this.#ready !== null;
  }

  /** The scheduler, once the model is loaded. */
  get scheduler(): Scheduler | null {
    return this.#ready?.scheduler ?? null;
  }

  /** Totals for a summary: finished requests and generated tokens. */
  stats(): { requests: number; generated_tokens: number } {
    const m = this.#ready?.metrics;
    return {
      requests: m ? [...m.requests.values()].reduce((a, b) => a + b, 0) : 0,
      generated_tokens: m?.generatedTokens ?? 0,
    };
  }

  /** Switch from loading to ready with a loaded engine. */
  setEngine(engine: ServeEngine, chat: ChatTemplate): void {
    const metrics = new Metrics(engine.nLayer, engine.expertsPerLayer);
    const eos = engine.tokenizer.eosId;
    const scheduler = new Scheduler(engine, {
      maxQueue: this.opts.maxQueue,
      eosIds: eos === undefined ? [] : [eos],
      metrics,
      log: this.opts.log,
    });
    const names = [engine.modelName, ...(this.opts.aliases ?? [])];
    this.#ready = { engine, scheduler, metrics, chat, created: Math.floor(Date.now() / 1000), names };
  }

  /** Record that loading failed: /health answers 500 with the message. */
  setLoadError(message: string): void {
    this.#loadError = message;
  }

  /**
   * Stop taking requests (new ones get 503), let in-flight ones finish for up to `graceMs`, cancel
   * the rest, then free the engine.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.#closing = true;
    const r = this.#ready;
    if (!r) return;
    await r.scheduler.shutdown(graceMs);
    r.engine.dispose();
  }

  /** Handles one request; never throws. */
  handler = async (req: Request): Promise<Response> => {
    try {
      return await this.#route(req);
    } catch (e) {
      if (e instanceof ApiError) return e.response();
      this.opts.log(`internal error on ${req.method} ${new URL(req.url).pathname}: ${(e as Error).stack ?? e}`);
      return new ApiError(500, `Internal server error: ${(e as Error).message}`, "server_error", "internal_error")
        .response();
    }
  };

  async #route(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname.replace(/\/+$/, "") || "/";
    const routes: Record<string, [string, () => Promise<Response> | Response]> = {
      "/": ["GET", () => new Response(pageHtml(), { headers: { "content-type": "text/html; charset=utf-8" } })],
      "/app.js": [
        "GET",
        async () => new Response(await pageScript(), { headers: { "content-type": "text/javascript; charset=utf-8" } }),
      ],
      "/favicon.ico": ["GET", () => new Response(null, { status: 204 })],
      "/health": ["GET", () => this.#health()],
      "/metrics": ["GET", () =>
        new Response(this.#ready?.metrics.render() ?? "", {
          status: this.#ready ? 200 : 503,
          headers: { "content-type": "text/plain; version=0.0.4" },
        })],
      "/props": ["GET", () => this.#props()],
      "/v1/models": ["GET", () => this.#models()],
      "/v1/completions": ["POST", () => this.#generate(req, "completion")],
      "/v1/chat/completions": ["POST", () => this.#generate(req, "chat")],
    };
    const route = routes[path];
    if (!route) {
      throw new ApiError(404, `Unknown endpoint: ${req.method} ${path}`, "invalid_request_error", "not_found");
    }
    if (req.method !== route[0] && !(route[0] === "GET" && req.method === "HEAD")) {
      throw new ApiError(
        405,
        `${path} accepts ${route[0]}, not ${req.method}`,
        "invalid_request_error",
        "method_not_allowed",
        {},
        {
          allow: route[0],
        },
      );
    }
    return await route[1]();
  }

  #health(): Response {
    if (this.#loadError) {
      return new ApiError(500, `Model failed to load: ${this.#loadError}`, "server_error", "load_failed").response();
    }
    if (!this.#ready) return new ApiError(503, "Loading model", "unavailable_error", "loading").response();
    if (this.#closing) return new ApiError(503, "Shutting down", "unavailable_error", "shutting_down").response();
    return json({ status: "ok" });
  }

  #need(): Ready {
    if (this.#closing) throw new ApiError(503, "The server is shutting down", "unavailable_error", "shutting_down");
    if (!this.#ready) {
      throw new ApiError(
        503,
        this.#loadError ? `Model failed to load: ${this.#loadError}` : "Loading model",
        "unavailable_error",
        "loading",
        {},
        {
          "retry-after": "1",
        },
      );
    }
    return this.#ready;
  }

  #models(): Response {
    const r = this.#need();
    return json({
      object: "list",
      data: [{
        id: r.engine.modelName,
        object: "model",
        created: r.created,
        owned_by: "lte-pipeline",
        max_model_len: r.engine.contextSize,
      }],
    });
  }

  #props(): Response {
    const r = this.#need();
    const e = r.engine;
    return json({
      model: e.modelName,
      context_size: e.contextSize,
      slots: e.maxBatch,
      max_queue: this.opts.maxQueue,
      max_body_bytes: this.opts.maxBodyBytes,
      default_max_tokens: this.opts.defaultMaxTokens,
      n_layer: e.nLayer,
      experts_per_layer: e.expertsPerLayer,
      sparse: e.expertsPerLayer !== null,
      chat_template: r.chat.kind,
      running: r.scheduler.running,
      waiting: r.scheduler.waiting,
      ...this.opts.props,
    });
  }

  async #readJson(req: Request): Promise<unknown> {
    const limit = this.opts.maxBodyBytes;
    const tooLarge = (n: string) =>
      new ApiError(
        413,
        `Request body is ${n} bytes; the limit is ${limit} bytes`,
        "invalid_request_error",
        "request_too_large",
      );
    const declared = Number(req.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > limit) throw tooLarge(String(declared));
    const chunks: Uint8Array[] = [];
    let total = 0;
    if (req.body) {
      const reader = req.body.getReader();
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > limit) {
          await reader.cancel().catch(() => {});
          throw tooLarge(`more than ${limit}`);
        }
        chunks.push(value);
      }
    }
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const c of chunks) {
      bytes.set(c, o);
      o += c.byteLength;
    }
    const text = new TextDecoder().decode(bytes);
    if (text.trim() === "") throw badRequest("Request body is empty; expected a JSON object", "invalid_json");
    try {
      return JSON.parse(text);
    } catch (e) {
      throw badRequest(`Request body is not valid JSON: ${(e as Error).message}`, "invalid_json");
    }
  }

  async #generate(req: Request, kind: "completion" | "chat"): Promise<Response> {
    const r = this.#need();
    const raw = await this.#readJson(req);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw badRequest("Request body must be a JSON object", "invalid_type");
    }
    const parsed = (kind === "chat" ? ChatRequest : CompletionRequest).safeParse(raw);
    if (!parsed.success) throw badRequest(formatZodError(parsed.error), "invalid_type");
    const body = parsed.data as z.infer<typeof ChatRequest> & z.infer<typeof CompletionRequest>;
    const e = r.engine;
    if (body.model && !r.names.includes(body.model)) {
      throw new ApiError(
        404,
        `The model "${body.model}" does not exist; this server serves "${e.modelName}"`,
        "invalid_request_error",
        "model_not_found",
      );
    }
    const tok = e.tokenizer;
    const addBos = tok.kind === "hf-bpe" && tok.bosId !== undefined;
    let ids: number[];
    const stop: string[] = body.stop === undefined || body.stop === null
      ? []
      : typeof body.stop === "string"
      ? [body.stop]
      : [...body.stop];
    if (kind === "chat") {
      let text: string;
      try {
        text = r.chat.render(body.messages);
      } catch (err) {
        throw badRequest(
          `The chat template failed on these messages: ${(err as Error).message}`,
          "chat_template_error",
        );
      }
      ids = tok.encode(text, { addBos: addBos && r.chat.kind === "plain", allowSpecial: r.chat.specialTokens });
      stop.push(...r.chat.stop);
    } else {
      const p = body.prompt;
      if (typeof p === "string" || typeof p[0] === "string") {
        ids = tok.encode(typeof p === "string" ? p : (p[0] as string), { addBos });
      } else {
        ids = p as number[];
        const bad = ids.find((t) => t >= tok.vocabSize);
        if (bad !== undefined) {
          throw badRequest(
            `prompt: token id ${bad} is outside the vocabulary (size ${tok.vocabSize})`,
            "invalid_token",
          );
        }
      }
    }
    if (ids.length === 0) throw badRequest("The prompt is empty (0 tokens)", "empty_prompt");
    if (ids.length >= e.contextSize) {
      throw badRequest(
        `The prompt has ${ids.length} tokens; this model's context is ${e.contextSize} tokens, and the prompt must ` +
          `leave room for at least one generated token. Shorten the prompt (it is never truncated)`,
        "context_length_exceeded",
        { prompt_tokens: ids.length, context_size: e.contextSize },
      );
    }
    const room = e.contextSize - ids.length;
    const maxTokens = Math.min(body.max_completion_tokens ?? body.max_tokens ?? this.opts.defaultMaxTokens, room);
    const sampling: SamplingParams = {
      temperature: body.temperature ?? 1,
      topK: body.top_k ?? 0,
      topP: body.top_p ?? 1,
      seed: body.seed ?? Math.floor(Math.random() * 2 ** 31),
    };
    const abort = new AbortController();
    req.signal.addEventListener("abort", () => abort.abort(), { once: true });
    let seq;
    try {
      seq = r.scheduler.submit({
        ids,
        maxTokens,
        sampling,
        stop,
        ignoreEos: body.ignore_eos === true,
        signal: abort.signal,
      });
    } catch (err) {
      if (err instanceof QueueFullError) {
        throw new ApiError(429, err.message, "rate_limit_error", "queue_full", {}, {
          "retry-after": String(err.retryAfterS),
        });
      }
      if (err instanceof ShuttingDownError) {
        throw new ApiError(503, err.message, "unavailable_error", "shutting_down");
      }
      throw err;
    }
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "").slice(0, 24)}`;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: "", created, model: e.modelName };
    if (body.stream) {
      return this.#stream(seq.events, abort, kind, head, body.stream_options?.include_usage === true);
    }
    let text = "";
    for await (const ev of seq.events) {
      if (ev.type === "text") text += ev.text;
      else if (ev.type === "error") throw engineError(ev.error);
      else {
        // A cancelled sequence whose client is still here was cut off by a shutdown.
        if (ev.finishReason === "cancelled") throw cancelledError();
        text += ev.text;
        const finish = ev.finishReason;
        const choice = kind === "chat"
          ? { index: 0, message: { role: "assistant", content: text }, logprobs: null, finish_reason: finish }
          : { index: 0, text, logprobs: null, finish_reason: finish };
        return json({
          ...head,
          object: kind === "chat" ? "chat.completion" : "text_completion",
          choices: [choice],
          usage: usageOf(ev.stats),
          timings: timingsOf(ev.stats),
        });
      }
    }
    throw new Error("the sequence ended without a result");
  }

  #stream(
    events: AsyncIterable<SequenceEvent>,
    abort: AbortController,
    kind: "completion" | "chat",
    head: { id: string; object: string; created: number; model: string },
    includeUsage: boolean,
  ): Response {
    const enc = new TextEncoder();
    const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
      ...head,
      object,
      choices: [{ index: 0, logprobs: null, finish_reason: null, ...choice }],
      ...extra,
    });
    const content = (text: string) => (kind === "chat" ? { delta: { content: text } } : { text });
    const log = this.opts.log;
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (v: unknown) => controller.enqueue(enc.encode(`data: ${JSON.stringify(v)}\n\n`));
        try {
          if (kind === "chat") send(chunk({ delta: { role: "assistant", content: "" } }));
          for await (const ev of events) {
            if (ev.type === "text") {
              send(chunk(content(ev.text), { lte: { active_experts: ev.activeExperts } }));
            } else if (ev.type === "error") {
              send(engineError(ev.error).body());
            } else if (ev.finishReason === "cancelled") {
              if (!abort.signal.aborted) send(cancelledError().body());
            } else {
              const finish = ev.finishReason;
              const last = kind === "chat" ? { delta: ev.text ? { content: ev.text } : {} } : { text: ev.text };
              send(chunk({ ...last, finish_reason: finish }, {
                lte: { active_experts: ev.activeExperts },
                timings: timingsOf(ev.stats),
              }));
              if (includeUsage) send({ ...head, object, choices: [], usage: usageOf(ev.stats) });
            }
          }
          controller.enqueue(enc.encode("data: [DONE]\n\n"));
          controller.close();
        } catch (e) {
          // The client went away (enqueue on a cancelled stream) or the engine failed.
          abort.abort();
          if (!abort.signal.aborted) log(`stream error: ${(e as Error).message}`);
          try {
            controller.close();
          } catch { /* already closed */ }
        }
      },
      cancel() {
        abort.abort();
      },
    });
    return new Response(body, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
    });
  }
}

function cancelledError(): ApiError {
  return new ApiError(
    503,
    "Generation was cancelled: the server is shutting down",
    "unavailable_error",
    "shutting_down",
  );
}

/** An engine failure as an API error: engine input errors are the client's (400), others 500. */
function engineError(e: Error): ApiError {
  if (e.name === "EngineError") return badRequest(e.message, "engine_rejected");
  return new ApiError(500, `Generation failed: ${e.message}`, "server_error", "engine_error");
}

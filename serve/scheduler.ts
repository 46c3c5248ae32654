/**
 * Continuous batching over the engine's slots.
 *
 * Requests wait in a bounded FIFO queue. One loop owns the engine (so engine calls never overlap):
 * between two decode steps it drops cancelled sequences (freeing their slots), admits waiting
 * requests while the engine has free slots (one prefill each, which yields the first token), then
 * runs ONE batched `Engine.step` over every running sequence. A sequence leaves the batch when it
 * hits the end-of-sequence token, a stop string, its `max_tokens`, or the context size, or when its
 * client goes away; the next waiting request takes the slot at the next step.
 *
 * A full queue refuses new requests at once ({@linkcode QueueFullError}: HTTP 429 with
 * Retry-After) instead of letting latency grow without bound.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { SamplingParams, ServeEngine } from "./engine_api.ts";
import type { Metrics } from "./metrics.ts";

/** A generation request, already tokenized and validated. */
export interface SubmitRequest {
  ids: number[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Stop strings: generation ends before the first occurrence, which is not returned. */
  stop: string[];
  /** Generate past end-of-sequence tokens: only `maxTokens`, a stop string or the context end it. */
  ignoreEos?: boolean;
  /** Aborting it (client disconnect) cancels the request, queued or running. */
  signal?: AbortSignal;
  /** `performance.now()` when the request arrived (for queue time and TTFT). @default now */
  arrival?: number;
}

export type FinishReason = "stop" | "length" | "cancelled";

/** Timings and counts of one finished sequence. */
export interface SequenceStats {
  promptTokens: number;
  completionTokens: number;
  /** Waiting for a slot. */
  queueMs: number;
  /** The prefill call (prompt processing and the first token). */
  promptMs: number;
  /** Arrival to first token. */
  ttftMs: number;
  /** First token to last token. */
  generationMs: number;
  totalMs: number;
  /** Tokens after the first per second of generationMs. */
  tokensPerSecond: number;
  /** 1 - active experts / all experts over the generated tokens; null for a dense model. */
  ffnSparsity: number | null;
  /** Mean active experts per layer over the generated tokens; null for a dense model. */
  activeExpertsPerLayer: number[] | null;
}

/** What a sequence reports, in order: text pieces, then exactly one `done` or `error`. */
export type SequenceEvent =
  | {
    type: "text";
    text: string;
    /** Per generated token since the previous event: active experts per layer (`[]` when dense). */
    activeExperts: number[][];
  }
  | { type: "done"; finishReason: FinishReason; text: string; activeExperts: number[][]; stats: SequenceStats }
  | { type: "error"; error: Error };

/** The bounded queue is full; retry after `retryAfterS` seconds. */
export class QueueFullError extends Error {
  override name = "QueueFullError";
  constructor(readonly queued: number, readonly retryAfterS: number) {
    super(`The server is busy: ${queued} requests are queued (the limit); retry after ${retryAfterS} s`);
  }
}

/** The scheduler no longer takes requests (the server is shutting down). */
export class ShuttingDownError extends Error {
  override name = "ShuttingDownError";
  constructor() {
    super("The server is shutting down");
  }
}

export interface SchedulerOptions {
  /** Requests that may wait for a slot; one more is refused with {@linkcode QueueFullError}. */
  maxQueue: number;
  /** Token ids that end a sequence (end-of-sequence). */
  eosIds: number[];
  metrics?: Metrics;
  /** Called with a message when a step fails (the sequences in it fail, the server goes on). */
  log?: (message: string) => void;
}

/** A push queue read as an async iterable (one reader). */
class EventQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiter: ((v: void) => void) | null = null;
  #closed = false;
  push(v: T): void {
    this.#items.push(v);
    this.#waiter?.();
    this.#waiter = null;
  }
  close(): void {
    this.#closed = true;
    this.#waiter?.();
    this.#waiter = null;
  }
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    while (true) {
      if (this.#items.length) {
        yield this.#items.shift()!;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((r) => (this.#waiter = r));
    }
  }
}

/** One request as it goes through the scheduler. */
export class Sequence {
  readonly events: AsyncIterable<SequenceEvent>;
  readonly #queue = new EventQueue<SequenceEvent>();
  slot: number | null = null;
  finished: FinishReason | "error" | null = null;
  cancelled = false;
  readonly out: number[] = [];
  readonly experts: number[][] = [];
  readonly arrival: number;
  admitted = 0;
  prefillDone = 0;
  lastToken = 0;
  // incremental detokenization
  prefixOff = 0;
  readOff = 0;
  held = "";
  pendingExperts: number[][] = [];

  constructor(readonly req: SubmitRequest) {
    this.events = this.#queue;
    this.arrival = req.arrival ?? performance.now();
  }
  emit(e: SequenceEvent): void {
    this.#queue.push(e);
    if (e.type !== "text") this.#queue.close();
  }
}

/** Continuous-batching scheduler over one engine. */
export class Scheduler {
  readonly #engine: ServeEngine;
  readonly #opts: SchedulerOptions;
  readonly #waiting: Sequence[] = [];
  readonly #running: Sequence[] = [];
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #closing = false;
  #cancelAll = false;
  /** Recent request durations (ms), for Retry-After. */
  #recentMs: number[] = [];

  constructor(engine: ServeEngine, opts: SchedulerOptions) {
    this.#engine = engine;
    this.#opts = opts;
  }

  get running(): number {
    return this.#running.length;
  }
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Queue a request. Read the returned sequence's `events` for its text.
   *
   * @throws {QueueFullError} When `maxQueue` requests are already waiting.
   * @throws {ShuttingDownError} After {@linkcode Scheduler.shutdown} began.
   */
  submit(req: SubmitRequest): Sequence {
    if (this.#closing) throw new ShuttingDownError();
    if (this.#waiting.length >= this.#opts.maxQueue) {
      this.#opts.metrics?.countRequest("rejected");
      throw new QueueFullError(this.#waiting.length, this.#retryAfter());
    }
    const seq = new Sequence(req);
    if (req.signal?.aborted) {
      this.#finish(seq, "cancelled");
      return seq;
    }
    req.signal?.addEventListener("abort", () => this.#cancel(seq), { once: true });
    this.#waiting.push(seq);
    this.#gauges();
    this.#poke();
    return seq;
  }

  /**
   * Stop taking requests; let queued and running ones finish for up to `graceMs`, then cancel the
   * rest. Resolves when the loop has stopped (the engine is idle).
   */
  async shutdown(graceMs: number): Promise<void> {
    this.#closing = true;
    this.#poke();
    const loop = this.#loop;
    if (loop) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), graceMs)));
      const r = await Promise.race([loop.then(() => "done" as const), timeout]);
      clearTimeout(timer);
      if (r === "timeout") {
        this.#cancelAll = true;
        this.#poke();
        await this.#loop;
      }
    }
    for (const s of this.#waiting.splice(0)) this.#finish(s, "cancelled");
  }

  #retryAfter(): number {
    const r = this.#recentMs;
    const mean = r.length ? r.reduce((a, b) => a + b, 0) / r.length : 1000;
    const slots = Math.max(1, this.#engine.maxBatch);
    return Math.max(1, Math.ceil((mean * (this.#waiting.length / slots)) / 1000));
  }

  #gauges(): void {
    const m = this.#opts.metrics;
    if (m) {
      m.requestsRunning = this.#running.length;
      m.requestsWaiting = this.#waiting.length;
    }
  }

  #poke(): void {
    if (!this.#loop && (this.#waiting.length || this.#running.length)) {
      this.#loop = this.#run().finally(() => (this.#loop = null));
    }
    this.#wake?.();
    this.#wake = null;
  }

  #cancel(seq: Sequence): void {
    seq.cancelled = true;
    const i = this.#waiting.indexOf(seq);
    if (i >= 0) {
      this.#waiting.splice(i, 1);
      this.#finish(seq, "cancelled");
      this.#gauges();
    }
    this.#poke();
  }

  async #run(): Promise<void> {
    const engine = this.#engine;
    while (true) {
      // Leave the event loop a turn so that requests arriving meanwhile can join the next step
      // (setImmediate: one I/O turn, ~0.05 ms; setTimeout(0) costs ~2.5 ms per step).
      await new Promise((r) => setImmediate(r));
      if (this.#cancelAll) {
        for (const s of this.#running) if (!s.finished) this.#finish(s, "cancelled");
        for (const s of this.#waiting.splice(0)) this.#finish(s, "cancelled");
      }
      for (const s of this.#running) if (s.cancelled && !s.finished) this.#finish(s, "cancelled");
      this.#release();
      while (this.#waiting.length) {
        const slot = engine.allocSlot();
        if (slot === null) break;
        const seq = this.#waiting.shift()!;
        seq.slot = slot;
        seq.admitted = performance.now();
        this.#running.push(seq);
        this.#gauges();
        await this.#prefill(seq);
      }
      this.#release();
      const batch = this.#running.filter((s) => !s.finished);
      if (batch.length === 0) {
        if (!this.#waiting.length) return; // idle: the next submit starts a new loop
        this.#opts.log?.("no engine slot is free although no request is running; waiting");
        await new Promise<void>((r) => (this.#wake = r));
        continue;
      }
      let result;
      try {
        result = await engine.step(batch.map((s) => s.slot!), batch.map((s) => s.req.sampling));
      } catch (e) {
        this.#opts.log?.(`decode step failed for ${batch.length} requests: ${(e as Error).message}`);
        for (const s of batch) this.#fail(s, e as Error);
        this.#release();
        continue;
      }
      const m = this.#opts.metrics;
      if (m) {
        m.steps++;
        m.stepSlots += batch.length;
      }
      batch.forEach((s, i) => {
        if (!s.finished) this.#token(s, result.tokens[i]!, result.activeExperts[i] ?? []);
      });
      this.#release();
    }
  }

  async #prefill(seq: Sequence): Promise<void> {
    try {
      const r = await this.#engine.prefill(seq.slot!, seq.req.ids, seq.req.sampling);
      seq.prefillDone = performance.now();
      if (this.#opts.metrics) {
        this.#opts.metrics.promptTokens += seq.req.ids.length;
        this.#opts.metrics.ttft.observe((seq.prefillDone - seq.arrival) / 1000);
      }
      if (seq.cancelled) this.#finish(seq, "cancelled");
      else this.#token(seq, r.token, r.activeExperts);
    } catch (e) {
      this.#fail(seq, e as Error);
    }
  }

  /** Frees the slots of finished sequences. */
  #release(): void {
    for (let i = this.#running.length - 1; i >= 0; i--) {
      const s = this.#running[i]!;
      if (s.finished) {
        this.#running.splice(i, 1);
        if (s.slot !== null) this.#engine.freeSlot(s.slot);
        s.slot = null;
      }
    }
    this.#gauges();
  }

  /** One new token of `seq`: detokenize, check stop conditions, emit text. */
  #token(seq: Sequence, token: number, activeExperts: number[]): void {
    const now = performance.now();
    if (seq.out.length > 0) this.#opts.metrics?.tpot.observe((now - seq.lastToken) / 1000);
    seq.lastToken = now;
    this.#opts.metrics?.token(activeExperts);
    seq.experts.push(activeExperts);
    seq.pendingExperts.push(activeExperts);
    if (!seq.req.ignoreEos && this.#opts.eosIds.includes(token)) {
      seq.held += this.#flushText(seq);
      this.#finish(seq, "stop");
      return;
    }
    seq.out.push(token);
    seq.held += this.#newText(seq, false);
    // Stop strings: emit up to the first occurrence; hold back a suffix that may start one.
    let cut = -1;
    for (const stop of seq.req.stop) {
      const i = seq.held.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      seq.held = seq.held.slice(0, cut);
      this.#finish(seq, "stop");
      return;
    }
    const total = seq.req.ids.length + seq.out.length;
    if (seq.out.length >= seq.req.maxTokens || total >= this.#engine.contextSize) {
      seq.held += this.#flushText(seq);
      this.#finish(seq, "length");
      return;
    }
    let keep = 0;
    for (const stop of seq.req.stop) {
      for (let k = Math.min(stop.length - 1, seq.held.length); k > keep; k--) {
        if (seq.held.endsWith(stop.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    const text = seq.held.slice(0, seq.held.length - keep);
    if (text.length > 0) {
      seq.held = seq.held.slice(seq.held.length - keep);
      seq.emit({ type: "text", text, activeExperts: seq.pendingExperts });
      seq.pendingExperts = [];
    }
  }

  /** Text of the tokens decoded since the last call; holds back an incomplete UTF-8 character. */
  #newText(seq: Sequence, final: boolean): string {
    const tok = this.#engine.tokenizer;
    const prefix = tok.decode(seq.out.slice(seq.prefixOff, seq.readOff), { skipSpecial: true });
    const full = tok.decode(seq.out.slice(seq.prefixOff), { skipSpecial: true });
    if (full.length > prefix.length && (final || !full.endsWith("\uFFFD"))) {
      seq.prefixOff = seq.readOff;
      seq.readOff = seq.out.length;
      return full.slice(prefix.length);
    }
    return "";
  }

  #flushText(seq: Sequence): string {
    return this.#newText(seq, true);
  }

  #fail(seq: Sequence, error: Error): void {
    if (seq.finished) return;
    seq.finished = "error";
    this.#opts.metrics?.countRequest("error");
    seq.emit({ type: "error", error });
  }

  #finish(seq: Sequence, reason: FinishReason): void {
    if (seq.finished) return;
    seq.finished = reason;
    const end = performance.now();
    const first = seq.prefillDone || end;
    const n = seq.experts.length;
    let ffnSparsity: number | null = null, perLayer: number[] | null = null;
    const E = this.#engine.expertsPerLayer, L = this.#engine.nLayer;
    const counted = seq.experts.filter((a) => a.length === L);
    if (E && counted.length) {
      perLayer = new Array(L).fill(0);
      for (const a of counted) for (let l = 0; l < L; l++) perLayer[l]! += a[l]!;
      perLayer = perLayer.map((v) => v / counted.length);
      ffnSparsity = 1 - perLayer.reduce((a, b) => a + b, 0) / (L * E);
    }
    const generationMs = n > 1 ? seq.lastToken - first : 0;
    const stats: SequenceStats = {
      promptTokens: seq.req.ids.length,
      completionTokens: n,
      queueMs: (seq.admitted || end) - seq.arrival,
      promptMs: seq.prefillDone ? seq.prefillDone - seq.admitted : 0,
      ttftMs: seq.prefillDone ? seq.prefillDone - seq.arrival : 0,
      generationMs,
      totalMs: end - seq.arrival,
      tokensPerSecond: generationMs > 0 ? ((n - 1) * 1000) / generationMs : 0,
      ffnSparsity,
      activeExpertsPerLayer: perLayer,
    };
    const m = this.#opts.metrics;
    m?.countRequest(reason);
    if (reason !== "cancelled") {
      m?.latency.observe(stats.totalMs / 1000);
      this.#recentMs.push(stats.totalMs);
      if (this.#recentMs.length > 32) this.#recentMs.shift();
    }
    const text = reason === "cancelled" ? "" : seq.held;
    seq.held = "";
    seq.emit({ type: "done", finishReason: reason, text, activeExperts: seq.pendingExperts, stats });
    seq.pendingExperts = [];
  }
}

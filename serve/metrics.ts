/**
 * Server metrics, rendered in the Prometheus text exposition format at `/metrics`.
 *
 * All names start with `lte_`. Counters are totals since start; `lte_generation_tokens_per_second`
 * is the rate over the last 10 s; `lte_ffn_sparsity` is the realized FFN sparsity of every token
 * generated so far (1 - active experts / all experts), per layer in `lte_ffn_layer_sparsity`.
 *
 * @module
 */

const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  render(name: string, help: string): string {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${num(this.sum)}`,
      `${name}_count ${this.count}`,
    );
    return lines.join("\n");
  }
}

function num(v: number): string {
  return Number.isFinite(v) ? String(Math.round(v * 1e6) / 1e6) : "NaN";
}

/** Counters and histograms fed by the scheduler and the HTTP layer. */
export class Metrics {
  requestsRunning = 0;
  requestsWaiting = 0;
  readonly requests = new Map<string, number>(); // by outcome: stop, length, cancelled, error, rejected, invalid
  promptTokens = 0;
  generatedTokens = 0;
  steps = 0;
  stepSlots = 0;
  readonly ttft = new Histogram(TTFT_BUCKETS);
  readonly latency = new Histogram(LATENCY_BUCKETS);
  readonly tpot = new Histogram(TPOT_BUCKETS);
  /** Per layer: active experts summed over generated tokens, and the tokens counted. */
  layerActive: number[] = [];
  sparseTokens = 0;
  readonly #recent: [number, number][] = []; // [time ms, tokens]

  constructor(readonly nLayer: number, readonly expertsPerLayer: number | null) {
    this.layerActive = new Array(nLayer).fill(0);
  }

  countRequest(outcome: string): void {
    this.requests.set(outcome, (this.requests.get(outcome) ?? 0) + 1);
  }

  /** One generated token with its per-layer active expert counts (`[]` when dense). */
  token(activeExperts: number[]): void {
    this.generatedTokens++;
    const now = performance.now();
    const last = this.#recent.at(-1);
    if (last && now - last[0] < 100) last[1]++;
    else this.#recent.push([now, 1]);
    if (activeExperts.length === this.nLayer && this.expertsPerLayer) {
      for (let l = 0; l < this.nLayer; l++) this.layerActive[l]! += activeExperts[l]!;
      this.sparseTokens++;
    }
  }

  /** Tokens per second generated over the last `windowS` seconds. */
  tokensPerSecond(windowS = 10): number {
    const now = performance.now(), from = now - windowS * 1000;
    while (this.#recent.length && this.#recent[0]![0] < from) this.#recent.shift();
    const n = this.#recent.reduce((s, r) => s + r[1], 0);
    return n / windowS;
  }

  /** Realized FFN sparsity per layer over every generated token; null for a dense model. */
  layerSparsity(): number[] | null {
    if (!this.expertsPerLayer || this.sparseTokens === 0) return null;
    return this.layerActive.map((a) => 1 - a / (this.sparseTokens * this.expertsPerLayer!));
  }

  /** The Prometheus text. */
  render(): string {
    const out: string[] = [];
    const gauge = (name: string, help: string, v: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${num(v)}`);
    const counter = (name: string, help: string, v: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${num(v)}`);
    gauge("lte_requests_running", "Requests holding an engine slot", this.requestsRunning);
    gauge("lte_requests_waiting", "Requests queued for a slot", this.requestsWaiting);
    out.push("# HELP lte_requests_total Finished requests by outcome", "# TYPE lte_requests_total counter");
    for (const [k, v] of [...this.requests].sort()) out.push(`lte_requests_total{outcome="${k}"} ${v}`);
    counter("lte_prompt_tokens_total", "Prompt tokens prefilled", this.promptTokens);
    counter("lte_generation_tokens_total", "Tokens generated", this.generatedTokens);
    gauge("lte_generation_tokens_per_second", "Tokens generated per second over the last 10 s", this.tokensPerSecond());
    counter("lte_decode_steps_total", "Batched decode steps", this.steps);
    gauge("lte_decode_batch_size_mean", "Mean slots per decode step", this.steps ? this.stepSlots / this.steps : 0);
    out.push(this.ttft.render("lte_time_to_first_token_seconds", "Time from request arrival to its first token"));
    out.push(this.tpot.render("lte_time_per_output_token_seconds", "Time between tokens after the first"));
    out.push(this.latency.render("lte_request_duration_seconds", "Time from request arrival to its last token"));
    const ls = this.layerSparsity();
    if (ls) {
      gauge(
        "lte_ffn_sparsity",
        "Realized FFN sparsity over all generated tokens",
        ls.reduce((a, b) => a + b, 0) / ls.length,
      );
      out.push("# HELP lte_ffn_layer_sparsity Realized FFN sparsity per layer", "# TYPE lte_ffn_layer_sparsity gauge");
      ls.forEach((s, l) => out.push(`lte_ffn_layer_sparsity{layer="${l}"} ${num(s)}`));
    } else {
      gauge("lte_ffn_sparsity", "Realized FFN sparsity over all generated tokens (0: dense)", 0);
    }
    return out.join("\n") + "\n";
  }
}

/**
 * Load test of the HTTP server: N concurrent clients (default 64) send a bounded number of mixed
 * requests (streaming and not, completions and chat) over loopback, and the test reports throughput,
 * p50/p99 latency, time to first token and failed requests (which must be 0: the exit code is 1
 * otherwise).
 *
 * ```
 * deno task loadtest                                  # CPU, a tiny random LTE model (what CI runs)
 * deno task loadtest --model DIR [--dense|--sparse]   # a model folder
 * deno task loadtest --init medium --device cuda --compare --out docs/results/loadtest_h200.json
 * deno task loadtest --url http://127.0.0.1:8080      # a server that is already running (loopback only)
 * ```
 *
 * Options: --clients 64, --requests 192 (total), --max-tokens 16, --timeout 300 (seconds: requests
 * still running then are aborted and counted as failed), --max-batch 16 (server slots),
 * --device cpu|cuda, --dtype f32|f16|bf16, --init tiny|medium (a random model written to a temp folder: tiny = 2 layers,
 * d 32; medium = 8 layers, d 1024, d_ff 4096, 128 experts of 32 per layer), --tau (router
 * threshold of the generated model), --compare (dense, then sparse, same model), --save-model DIR (keep the --init model in
 * DIR/<tiny|medium> for a later --model run), --lookahead / --no-lookahead (the server's batch loop decodes one
 * step ahead, or not; default: the server's, on for cuda), --out FILE.
 *
 * The server runs as its own process (`deno run -A stages/serve_cli.ts ... --port 0`), so client and
 * server do not share an event loop. Latency is client-side, request sent to last byte; TTFT is
 * client-side for streaming requests (request sent to the first content chunk) and the server's
 * `timings.ttft_ms` for all.
 *
 * @module
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { tmpdir } from "node:os";
import { makeTinyModel } from "../tests/_serve_fixture.ts";

interface Opts {
  clients: number;
  requests: number;
  maxTokens: number;
  timeoutS: number;
  maxBatch: number;
  device: string;
  dtype: string;
  model: string | null;
  url: string | null;
  init: "tiny" | "medium";
  saveModel: string | null;
  tau: number | null;
  modes: ("dense" | "sparse" | "auto")[];
  /** The server's `--lookahead` / `--no-lookahead`; null: its default. */
  lookahead: boolean | null;
  out: string | null;
}

function parse(args: string[]): Opts {
  const o: Opts = {
    clients: 64,
    requests: 192,
    maxTokens: 16,
    timeoutS: 300,
    maxBatch: 16,
    device: "cpu",
    dtype: "f32",
    model: null,
    url: null,
    init: "tiny",
    saveModel: null,
    tau: null,
    modes: ["auto"],
    lookahead: null,
    out: null,
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const v = () => {
      const x = args[++i];
      if (x === undefined) throw new Error(`${a}: missing value`);
      return x;
    };
    const n = (min: number) => {
      const x = Number(v());
      if (!Number.isFinite(x) || x < min) throw new Error(`${a}: expected a number >= ${min}`);
      return x;
    };
    if (a === "--clients") o.clients = n(1);
    else if (a === "--requests") o.requests = n(1);
    else if (a === "--max-tokens") o.maxTokens = n(1);
    else if (a === "--timeout") o.timeoutS = n(1);
    else if (a === "--max-batch") o.maxBatch = n(1);
    else if (a === "--device") o.device = v();
    else if (a === "--dtype") o.dtype = v();
    else if (a === "--model") o.model = v();
    else if (a === "--url") o.url = v();
    else if (a === "--init") {
      const x = v();
      if (x !== "tiny" && x !== "medium") throw new Error(`--init: expected tiny or medium, got "${x}"`);
      o.init = x;
    } else if (a === "--save-model") o.saveModel = v();
    else if (a === "--tau") o.tau = n(0);
    else if (a === "--dense") o.modes = ["dense"];
    else if (a === "--sparse") o.modes = ["sparse"];
    else if (a === "--compare") o.modes = ["dense", "sparse"];
    else if (a === "--lookahead") o.lookahead = true;
    else if (a === "--no-lookahead") o.lookahead = false;
    else if (a === "--out") o.out = v();
    else throw new Error(`unknown option ${a} (see the header of bench/loadtest.ts)`);
  }
  if (o.url) {
    const host = new URL(o.url).hostname;
    if (!["127.0.0.1", "localhost", "[::1]", "::1"].includes(host)) {
      throw new Error(`--url: the load test only targets loopback (127.0.0.1, localhost, ::1), not ${host}`);
    }
  }
  return o;
}

/** Every request generates max_tokens (no end-of-sequence stop): runs of the same size compare. */
const IGNORE_EOS = true;

const PROMPTS = [
  "Call me Ishmael.",
  "Some years ago, never mind how long precisely, having little or no money in my purse,",
  "It is a way I have of driving off the spleen and regulating the circulation.",
  "Whenever I find myself growing grim about the mouth;",
  "There now is your insular city of the Manhattoes, belted round by wharves",
  "Circumambulate the city of a dreamy Sabbath afternoon.",
];

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

interface One {
  ok: boolean;
  error?: string;
  stream: boolean;
  latencyMs: number;
  ttftMs: number | null;
  serverTtftMs: number | null;
  tokens: number;
  sparsity: number | null;
}

async function oneRequest(url: string, i: number, o: Opts, signal: AbortSignal): Promise<One> {
  const stream = i % 2 === 0, chat = i % 4 >= 2;
  const prompt = PROMPTS[i % PROMPTS.length]!;
  const body: Record<string, unknown> = {
    max_tokens: o.maxTokens,
    ignore_eos: IGNORE_EOS,
    temperature: 0.8,
    seed: i,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
    ...(chat ? { messages: [{ role: "user", content: prompt }] } : { prompt }),
  };
  const t0 = performance.now();
  const res: One = { ok: false, stream, latencyMs: 0, ttftMs: null, serverTtftMs: null, tokens: 0, sparsity: null };
  try {
    const r = await fetch(`${url}/v1/${chat ? "chat/completions" : "completions"}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
    if (!r.ok) {
      res.error = `HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`;
      return res;
    }
    if (!stream) {
      const j = await r.json();
      res.tokens = j.usage.completion_tokens;
      res.sparsity = j.usage.ffn_sparsity;
      res.serverTtftMs = j.timings?.ttft_ms ?? null;
      res.ok = typeof (chat ? j.choices[0].message.content : j.choices[0].text) === "string";
      if (!res.ok) res.error = "no text in the response";
    } else {
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", done = false, usage = false;
      while (true) {
        const { done: end, value } = await reader.read();
        if (end) break;
        buf += value;
        let k;
        while ((k = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, k);
          buf = buf.slice(k + 2);
          if (!ev.startsWith("data: ")) continue;
          if (ev === "data: [DONE]") {
            done = true;
            continue;
          }
          const j = JSON.parse(ev.slice(6));
          if (j.error) throw new Error(j.error.message);
          if (res.ttftMs === null && (j.lte?.active_experts?.length ?? 0) > 0) res.ttftMs = performance.now() - t0;
          if (j.timings) res.serverTtftMs = j.timings.ttft_ms;
          if (j.usage) {
            usage = true;
            res.tokens = j.usage.completion_tokens;
            res.sparsity = j.usage.ffn_sparsity;
          }
        }
      }
      res.ok = done && usage;
      if (!res.ok) res.error = done ? "no usage chunk" : "stream ended without data: [DONE]";
    }
  } catch (e) {
    res.error = (e as Error).message;
  } finally {
    res.latencyMs = performance.now() - t0;
  }
  return res;
}

/** Spawns `stages/serve_cli.ts` on a free port; resolves when the model is loaded. */
async function spawnServer(model: string, mode: string, o: Opts): Promise<{ url: string; stop(): Promise<number> }> {
  const args = [
    "run",
    "-A",
    "stages/serve_cli.ts",
    model,
    "--port",
    "0",
    "--device",
    o.device,
    "--dtype",
    o.dtype,
    "--max-batch",
    String(o.maxBatch),
  ];
  args.push("--max-queue", String(Math.max(o.clients, 64)), "--max-tokens", String(o.maxTokens));
  if (o.lookahead !== null) args.push(o.lookahead ? "--lookahead" : "--no-lookahead");
  if (mode === "dense") args.push("--dense");
  if (mode === "sparse") args.push("--sparse");
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "null", stderr: "piped" }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let log = "", url = "";
  while (!log.includes("ready in")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the server exited before it was ready:\n${log}`);
    log += value;
    url ||= log.match(/listening on (http:\/\/\S+)/)?.[1] ?? "";
  }
  console.error(log.trim().split("\n").map((l) => `  ${l}`).join("\n"));
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    url,
    async stop() {
      child.kill("SIGTERM");
      const s = await child.status;
      await drain;
      return s.code;
    },
  };
}

async function run(url: string, o: Opts): Promise<Record<string, unknown>> {
  const props = await (await fetch(`${url}/props`)).json();
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), o.timeoutS * 1000);
  let next = 0;
  const results: One[] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: o.clients }, async () => {
    while (next < o.requests && !deadline.signal.aborted) {
      results.push(await oneRequest(url, next++, o, deadline.signal));
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  clearTimeout(timer);
  const metrics = await (await fetch(`${url}/metrics`)).text();
  const metric = (n: string) => Number(metrics.split("\n").find((l) => l.startsWith(n + " "))?.split(" ")[1]);
  const ok = results.filter((r) => r.ok);
  const failed = results.filter((r) => !r.ok).length + (o.requests - results.length);
  const tokens = ok.reduce((a, r) => a + r.tokens, 0);
  const lat = ok.map((r) => r.latencyMs), ttft = ok.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs]));
  const sttft = ok.flatMap((r) => (r.serverTtftMs === null ? [] : [r.serverTtftMs]));
  const sp = ok.flatMap((r) => (r.sparsity === null ? [] : [r.sparsity]));
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    model: props.model,
    device: props.device,
    dtype: props.dtype,
    sparse: props.sparse,
    slots: props.slots,
    context_size: props.context_size,
    clients: o.clients,
    requests: o.requests,
    max_tokens: o.maxTokens,
    ignore_eos: IGNORE_EOS,
    completed: ok.length,
    failed,
    errors: [...new Set(results.filter((r) => !r.ok).map((r) => r.error))].slice(0, 5),
    wall_s: r2(wall),
    completion_tokens: tokens,
    tokens_per_second: r2(tokens / wall),
    requests_per_second: r2(ok.length / wall),
    latency_ms: { p50: r2(pct(lat, 50)), p99: r2(pct(lat, 99)), max: r2(Math.max(...lat)) },
    ttft_ms_streaming_client: { p50: r2(pct(ttft, 50)), p99: r2(pct(ttft, 99)) },
    ttft_ms_server: { p50: r2(pct(sttft, 50)), p99: r2(pct(sttft, 99)) },
    ffn_sparsity_mean: sp.length ? Math.round((1e4 * sp.reduce((a, b) => a + b, 0)) / sp.length) / 1e4 : null,
    decode_batch_size_mean: r2(metric("lte_decode_batch_size_mean")),
  };
}

function table(rows: Record<string, any>[]): string {
  const line = (r: Record<string, any>) =>
    r.error
      ? `${r.mode} ${r.device}: the server did not start (${r.error}); failed ${r.failed}`
      : `${r.sparse ? "sparse" : "dense "} ${r.device} ${r.completed}/${r.requests} ok, failed ${r.failed}; ` +
        `${r.tokens_per_second} tok/s, ${r.requests_per_second} req/s; latency p50 ${r.latency_ms.p50} ms p99 ` +
        `${r.latency_ms.p99} ms; TTFT (stream) p50 ${r.ttft_ms_streaming_client.p50} ms p99 ` +
        `${r.ttft_ms_streaming_client.p99} ms; batch ${r.decode_batch_size_mean}; FFN sparsity ${
          r.ffn_sparsity_mean ?? "-"
        }`;
  return rows.map(line).join("\n");
}

if (import.meta.main) {
  let o: Opts;
  try {
    o = parse(Deno.args);
  } catch (e) {
    console.error(`loadtest: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const rows: Record<string, unknown>[] = [];
  let tmp: string | null = null;
  try {
    if (o.url) rows.push(await run(o.url, o));
    else {
      let model = o.model;
      if (!model) {
        const base = o.saveModel ?? (tmp = mkdtempSync(join(tmpdir(), "lte-loadtest-")));
        const t0 = performance.now();
        model = o.init === "tiny"
          ? makeTinyModel(join(base, "tiny"), { sparse: true, seed: 0, maxSeq: 128, tau: o.tau ?? 0.5 })
          : makeTinyModel(join(base, "medium"), {
            sparse: true,
            seed: 0,
            maxSeq: 512,
            nLayer: 8,
            dModel: 1024,
            dFf: 4096,
            nHead: 16,
            nKvHead: 16,
            expertSize: 32,
            routerStd: 0.05,
            tau: o.tau ?? 0.8,
          });
        console.error(`loadtest: wrote a random ${o.init} model in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      for (const mode of o.modes) {
        console.error(`loadtest: ${mode} server on ${o.device}, ${o.clients} clients, ${o.requests} requests`);
        let server;
        try {
          server = await spawnServer(model, mode, o);
        } catch (e) {
          console.error(`loadtest: ${(e as Error).message}`);
          rows.push({
            mode,
            device: o.device,
            error: (e as Error).message.split("\n")[0],
            requests: o.requests,
            failed: o.requests,
          });
          continue;
        }
        try {
          rows.push({ mode, ...(await run(server.url, o)) });
        } finally {
          const code = await server.stop();
          if (code !== 0) console.error(`loadtest: the server exited with code ${code} on SIGTERM`);
        }
      }
    }
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  console.log(table(rows));
  const report = {
    time: new Date().toISOString(),
    // The output path is where this machine wrote the file, not part of what was measured.
    command: ["deno task loadtest", ...Deno.args.map((a, i) => Deno.args[i - 1] === "--out" ? basename(a) : a)].join(
      " ",
    ),
    runs: rows,
  };
  if (o.out) {
    writeFileSync(o.out, JSON.stringify(report, null, 2) + "\n");
    console.error(`loadtest: wrote ${o.out}`);
  }
  const failed = rows.reduce((a, r) => a + (r.failed as number), 0);
  console.log(`failed requests: ${failed}`);
  Deno.exit(failed === 0 ? 0 : 1);
}

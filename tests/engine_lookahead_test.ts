/**
 * Lookahead decoding (engine option `lookahead`, CPU backend): `generate()` launches step t+1
 * before the host reads token t. Every way a generation can end must give exactly the tokens,
 * texts and positions of the plain path: greedy, seeded sampling, stop sequences, EOS, maxTokens
 * 1/2, a full context, an abort; other callers using the engine between two tokens (another
 * generate, step() on another slot) must not disturb it; and the speculative extra step must
 * leave the slot reusable. Also the native staging functions it rests on (lte_host_alloc,
 * lte_mem_read_start, lte_mem_read_wait, lte_host_free): data and errors.
 */
import nodeAssert from "node:assert/strict";
import { Engine, type EngineOptions, type GenerateOptions, GREEDY } from "../engine/mod.ts";
import { getBackend } from "../ffi/backend.ts";
import { cString } from "../ffi/library.ts";
import { Status } from "../ffi/symbols.ts";
import { routerBiasName, routerWeightName } from "../models/lte_artifacts.ts";
import { Rng } from "../tensor/mod.ts";
import { loadTokenizer, type Tokenizer } from "../text/tokenizer.ts";
import { initArrays, tinyLlamaConfig } from "./_tiny_llama.ts";

Deno.env.set("OMP_NUM_THREADS", Deno.env.get("OMP_NUM_THREADS") ?? "1");

const tokenizer = loadTokenizer({ type: "bytes" });
const CPU: EngineOptions = { device: "cpu", dtype: "f32", sparse: false, maxBatch: 3, maxContext: 40 };

const llamaConfig = tinyLlamaConfig;

const config = llamaConfig();
const arrays = initArrays(config, 4);

function engines(opts: Partial<EngineOptions> = {}, tk: Tokenizer = tokenizer): { on: Engine; off: Engine } {
  return {
    on: Engine.fromArrays(config, arrays, { ...CPU, ...opts, lookahead: true }, { tokenizer: tk }),
    off: Engine.fromArrays(config, arrays, { ...CPU, ...opts, lookahead: false }, { tokenizer: tk }),
  };
}

interface Run {
  ids: number[];
  texts: string[];
  active: number[][];
  /** position() of the generating slot (slot 0 on a fresh engine) when each token arrives. */
  pos: number[];
}

async function collect(eng: Engine, prompt: string | number[], opts: GenerateOptions): Promise<Run> {
  const run: Run = { ids: [], texts: [], active: [], pos: [] };
  for await (const t of eng.generate(prompt, opts)) {
    run.ids.push(t.id);
    run.texts.push(t.text);
    run.active.push(t.activeExperts);
    run.pos.push(eng.position(0));
  }
  return run;
}

/** The same generation with lookahead on and off: identical tokens, texts, experts, positions. */
async function same(e: { on: Engine; off: Engine }, prompt: string | number[], opts: GenerateOptions): Promise<Run> {
  const off = await collect(e.off, prompt, opts);
  const on = await collect(e.on, prompt, opts);
  nodeAssert.deepStrictEqual(on, off, `lookahead changed the output for ${JSON.stringify(opts)}`);
  return off;
}

Deno.test("lookahead: greedy and seeded sampling give the tokens of the plain path", async () => {
  const e = engines();
  try {
    const g = await same(e, "Hello", { maxTokens: 20 });
    nodeAssert.equal(g.ids.length, 20);
    // positions advance by one per token, as with step()
    nodeAssert.deepStrictEqual(g.pos, g.ids.map((_, i) => 5 + i));
    const s = await same(e, "Hello", { maxTokens: 16, temperature: 1.3, topK: 50, topP: 0.95, seed: 11 });
    const s2 = await same(e, "Hello", { maxTokens: 16, temperature: 1.3, topK: 50, topP: 0.95, seed: 12 });
    nodeAssert.notDeepStrictEqual(s.ids, s2.ids, "the seed matters (the comparison can fail)");
    // and with blocking reads
    const sync = engines({ syncRead: true });
    try {
      nodeAssert.deepStrictEqual(
        (await same(sync, "Hello", { maxTokens: 16, temperature: 1.3, topK: 50, topP: 0.95, seed: 11 })).ids,
        s.ids,
      );
    } finally {
      sync.on.dispose();
      sync.off.dispose();
    }
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

Deno.test("lookahead: maxTokens 1 and 2, stop sequences, a full context", async () => {
  const e = engines();
  try {
    const full = await same(e, [72, 105, 32], { maxTokens: 16 });
    nodeAssert.deepStrictEqual((await same(e, [72, 105, 32], { maxTokens: 1 })).ids, full.ids.slice(0, 1));
    nodeAssert.deepStrictEqual((await same(e, [72, 105, 32], { maxTokens: 2 })).ids, full.ids.slice(0, 2));
    nodeAssert.deepStrictEqual((await same(e, [72, 105, 32], { maxTokens: 0 })).ids, []);
    // a stop text made of generated tokens 5..6, and a stop text that never occurs
    const stop = tokenizer.decode(full.ids.slice(5, 7));
    const text = full.texts.join("");
    const cut = await same(e, [72, 105, 32], { maxTokens: 16, stop: [stop, "\u0000never"] });
    nodeAssert.equal(cut.texts.join(""), text.slice(0, text.indexOf(stop)));
    nodeAssert.ok(cut.ids.length < full.ids.length);
    // the context (40) ends the generation: 37-token prompt -> 4 tokens (positions 37..39 + the last)
    const long = Array.from({ length: 37 }, (_, i) => (i * 7 + 3) % 256);
    const c = await same(e, long, { maxTokens: 30 });
    nodeAssert.equal(c.ids.length, 4);
    nodeAssert.equal(c.pos.at(-1), 40);
    // 39-token prompt: one step (position 39) after the prefill's token
    const c1 = await same(e, Array.from({ length: 39 }, (_, i) => i + 1), { maxTokens: 30 });
    nodeAssert.equal(c1.ids.length, 2);
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

Deno.test("lookahead: EOS ends the generation like the plain path; the slot is reusable after the extra step", async () => {
  const base = engines();
  let eosId: number;
  let full: Run;
  try {
    full = await same(base, [9, 8, 7], { maxTokens: 14 });
    // the first token that does not occur earlier in the run, from index 4 on, becomes EOS
    const i = full.ids.findIndex((t, k) => k >= 4 && !full.ids.slice(0, k).includes(t));
    nodeAssert.ok(i >= 4, `no fresh token in ${full.ids}`);
    eosId = full.ids[i]!;
  } finally {
    base.on.dispose();
    base.off.dispose();
  }
  const tk = new Proxy(tokenizer, { get: (t, k) => (k === "eosId" ? eosId : Reflect.get(t, k)) });
  const e = engines({}, tk);
  try {
    const r = await same(e, [9, 8, 7], { maxTokens: 14 });
    nodeAssert.deepStrictEqual(r.ids, full.ids.slice(0, full.ids.indexOf(eosId)));
    // the extra (speculative) step wrote KV past the sequence's end in slot 0: the next user of
    // the slot decodes exactly as a fresh engine does
    const next = await collect(e.on, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], { maxTokens: 12, temperature: 0.8, seed: 3 });
    const fresh = Engine.fromArrays(config, arrays, { ...CPU, lookahead: false }, { tokenizer: tk });
    try {
      nodeAssert.deepStrictEqual(
        next,
        await collect(fresh, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], { maxTokens: 12, temperature: 0.8, seed: 3 }),
      );
    } finally {
      fresh.dispose();
    }
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

Deno.test("lookahead: an abort ends the generation at the same token as the plain path", async () => {
  const e = engines();
  try {
    const runs: number[][] = [];
    for (const eng of [e.off, e.on]) {
      const ac = new AbortController();
      const ids: number[] = [];
      for await (const t of eng.generate("Hello", { maxTokens: 30, signal: ac.signal })) {
        ids.push(t.id);
        if (ids.length === 6) ac.abort();
      }
      runs.push(ids);
      // the slot was freed: all slots are available again
      const slots = [eng.allocSlot(), eng.allocSlot(), eng.allocSlot()];
      nodeAssert.deepStrictEqual(slots, [0, 1, 2]);
      for (const s of slots) eng.freeSlot(s!);
    }
    nodeAssert.equal(runs[0]!.length, 6);
    nodeAssert.deepStrictEqual(runs[1], runs[0]);
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

Deno.test("lookahead: other callers between two tokens (generate, step on another slot) do not disturb it", async () => {
  const e = engines();
  try {
    const o1: GenerateOptions = { maxTokens: 12, temperature: 0.9, topK: 30, seed: 5 };
    const o2: GenerateOptions = { maxTokens: 9 };
    const solo1 = await collect(e.off, "Hello", o1), solo2 = await collect(e.off, [3, 1, 4, 1, 5], o2);
    // two generations running concurrently, with a third slot stepped in between
    const ids1: number[] = [], ids2: number[] = [], stepped: number[] = [];
    const g1 = e.on.generate("Hello", o1)[Symbol.asyncIterator]();
    const g2 = e.on.generate([3, 1, 4, 1, 5], o2)[Symbol.asyncIterator]();
    let third: number | null = null;
    for (let i = 0; i < 14; i++) {
      const [a, b] = await Promise.all([g1.next(), g2.next()]);
      if (!a.done) ids1.push(a.value.id);
      if (!b.done) ids2.push(b.value.id);
      if (i === 1) {
        third = e.on.allocSlot();
        stepped.push((await e.on.prefill(third!, [7, 7, 7], GREEDY)).token);
      } else if (i > 1 && i < 6) {
        stepped.push((await e.on.step([third!], [GREEDY])).tokens[0]!);
      }
    }
    nodeAssert.deepStrictEqual(ids1, solo1.ids);
    nodeAssert.deepStrictEqual(ids2, solo2.ids);
    // the stepped slot decoded as it would alone
    const ref = Engine.fromArrays(config, arrays, { ...CPU, lookahead: false }, { tokenizer });
    try {
      const s = ref.allocSlot()!;
      const want = [(await ref.prefill(s, [7, 7, 7], GREEDY)).token];
      for (let i = 0; i < 4; i++) want.push((await ref.step([s], [GREEDY])).tokens[0]!);
      nodeAssert.deepStrictEqual(stepped, want);
    } finally {
      ref.dispose();
    }
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

Deno.test("lookahead: sparse decoding reports the same active experts per token", async () => {
  const S = 32, E = config.d_ff / S;
  const rng = new Rng(11);
  const routers = new Map<string, Float32Array>();
  for (let i = 0; i < config.n_layer; i++) {
    routers.set(routerWeightName(i), rng.normals(E * config.d_model, 0.15));
    routers.set(routerBiasName(i), rng.normals(E, 0.5));
  }
  const mk = (lookahead: boolean) =>
    Engine.fromArrays(config, arrays, { ...CPU, sparse: true, lookahead }, {
      tokenizer,
      routers: { expertSize: S, tau: 0.5, arrays: routers },
    });
  const e = { on: mk(true), off: mk(false) };
  try {
    const r = await same(e, "Hello", { maxTokens: 10 });
    nodeAssert.ok(r.active.flat().some((n) => n < E), "some experts are off (the comparison can fail)");
    nodeAssert.ok(r.active.every((a) => a.length === config.n_layer));
  } finally {
    e.on.dispose();
    e.off.dispose();
  }
});

// ------------------------------------------------------------------ native staging functions

Deno.test("staging: lte_mem_read_start copies device memory into a lte_host_alloc block; wait and free", async () => {
  const be = getBackend("cpu");
  const src = be.alloc(64);
  const data = Int32Array.from({ length: 16 }, (_, i) => i * 3 - 7);
  be.write(src, data);
  const blk = be.hostAlloc(64);
  try {
    be.readWait(blk); // nothing started yet: returns at once
    const view = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(blk, 64));
    view.fill(0);
    // interior destination: 8 ints starting at byte 16 of the block
    const dst = Deno.UnsafePointer.offset(blk, 16) as Deno.PointerObject;
    be.readStart(dst, src, 32);
    await be.readWaitAsync(dst);
    nodeAssert.deepStrictEqual(Array.from(view), [0, 0, 0, 0, ...data.slice(0, 8), 0, 0, 0, 0]);
    be.readStart(blk, src, 64);
    be.readWait(Deno.UnsafePointer.offset(blk, 60) as Deno.PointerObject);
    nodeAssert.deepStrictEqual(Array.from(view), Array.from(data));
  } finally {
    be.hostFree(blk);
    be.free(src);
  }
});

Deno.test("staging: bad pointers and sizes are errors that name the function", () => {
  const be = getBackend("cpu"), s = be.sym, ctx = be.ctx;
  const src = be.alloc(64);
  const blk = be.hostAlloc(32);
  const msg = () => cString(s.lte_ctx_last_error(ctx));
  const expect = (status: number, want: number, re: RegExp) => {
    nodeAssert.equal(status, want, msg());
    nodeAssert.match(msg(), re);
  };
  try {
    const out = new BigUint64Array(1);
    expect(s.lte_host_alloc(ctx, 0n, out), Status.INVALID_ARGUMENT, /^lte_host_alloc: bytes = 0 must be > 0/);
    expect(s.lte_host_alloc(ctx, 8n, null), Status.INVALID_ARGUMENT, /^lte_host_alloc: out is NULL/);
    nodeAssert.equal(s.lte_host_alloc(null, 8n, out), Status.INVALID_ARGUMENT);
    // a device block is not a staging block
    expect(
      s.lte_mem_read_start(ctx, src, src, 4n),
      Status.INVALID_ARGUMENT,
      /^lte_mem_read_start: dst = .* is not in a block of lte_host_alloc/,
    );
    expect(
      s.lte_mem_read_start(ctx, blk, src, 33n),
      Status.INVALID_ARGUMENT,
      /^lte_mem_read_start: dst \+ bytes \(33\) runs past the end of its lte_host_alloc block \(32 bytes from dst\)/,
    );
    const mid = Deno.UnsafePointer.offset(blk, 24);
    expect(
      s.lte_mem_read_start(ctx, mid, src, 9n),
      Status.INVALID_ARGUMENT,
      /\(9\) runs past the end .* \(8 bytes from dst\)/,
    );
    expect(
      s.lte_mem_read_start(ctx, Deno.UnsafePointer.offset(blk, 32), src, 4n),
      Status.INVALID_ARGUMENT,
      /is not in a block/,
    );
    expect(s.lte_mem_read_start(ctx, blk, null, 4n), Status.INVALID_ARGUMENT, /^lte_mem_read_start: src is NULL/);
    expect(s.lte_mem_read_start(ctx, null, src, 4n), Status.INVALID_ARGUMENT, /^lte_mem_read_start: dst is NULL/);
    expect(
      s.lte_mem_read_start(ctx, blk, src, 0n),
      Status.INVALID_ARGUMENT,
      /^lte_mem_read_start: bytes = 0 must be > 0/,
    );
    expect(
      s.lte_mem_read_wait(ctx, src),
      Status.INVALID_ARGUMENT,
      /^lte_mem_read_wait: dst = .* is not in a block of lte_host_alloc/,
    );
    expect(s.lte_mem_read_wait(ctx, null), Status.INVALID_ARGUMENT, /^lte_mem_read_wait: dst is NULL/);
    // free: only the pointer lte_host_alloc returned; NULL is a no-op
    expect(
      s.lte_host_free(ctx, mid),
      Status.INVALID_ARGUMENT,
      /^lte_host_free: ptr = .* is not a block returned by lte_host_alloc/,
    );
    expect(s.lte_host_free(ctx, src), Status.INVALID_ARGUMENT, /^lte_host_free: ptr = .* is not a block returned/);
    nodeAssert.equal(s.lte_host_free(ctx, null), Status.OK);
    // through the Backend: typed errors naming the op
    nodeAssert.throws(() => be.readStart(src, src, 4), /lte_mem_read_start \(cpu\): INVALID_ARGUMENT/);
  } finally {
    be.hostFree(blk);
    be.free(src);
  }
  // a freed block is no longer one
  const gone = be.hostAlloc(16);
  be.hostFree(gone);
  nodeAssert.throws(() => be.readWait(gone), /lte_mem_read_wait \(cpu\): INVALID_ARGUMENT/);
});

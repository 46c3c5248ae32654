/**
 * LTE artifacts inside a model folder (a plain Hugging Face folder: config.json,
 * model.safetensors, tokenizer files), as pinned in the interfaces between the work areas:
 *
 * - `lte.json`: expert size and counts, the per-layer neuron permutation the group stage applied
 *   (provenance only: the weights in model.safetensors are already permuted), the grouping report,
 *   τ, the routers entry and the provenance list. Written by `group`, extended by `router-train`,
 *   `adapt`; read by eval, the engine and the server.
 * - `routers.safetensors`: per layer `layers.{i}.router.weight` f32 [experts_per_layer, d_model]
 *   (Linear layout, out x in) and optionally `layers.{i}.router.bias` [experts_per_layer].
 *
 * Expert e of layer l is the block of permuted neurons [e*expert_size, (e+1)*expert_size).
 *
 * Every reader validates shapes against the folder's `config.json` (layer count, d_ff, d_model)
 * and throws {@linkcode LteArtifactError} naming the file and the key or tensor at fault.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "../io/atomic.ts";
import { readCheckpointConfig } from "./checkpoint.ts";
import type { ModelConfig } from "./config.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";

/** The `format` value of an `lte.json` this module reads and writes. */
export const LTE_FORMAT = "lte-pipeline/lte@1";
/** File name of the LTE metadata inside a model folder. */
export const LTE_META_FILE = "lte.json";
/** Default file name of the routers inside a model folder. */
export const ROUTERS_FILE = "routers.safetensors";

/** Grouping methods of the group stage. */
export type GroupingMethod = "kmeans" | "random" | "coactivation";

/** How the experts were formed (written by the group stage). Extra keys are kept. */
export interface LteGrouping {
  method: GroupingMethod;
  seed: number;
  /** Mean cosine similarity of neuron feature vectors within an expert, over all layers. */
  mean_intra_cosine: number;
  /** The same for a random balanced grouping (the reference). */
  random_intra_cosine: number;
  [key: string]: unknown;
}

/** Where the routers are and how they were made. Extra keys are kept. */
export interface LteRoutersInfo {
  /** File name inside the model folder (normally `routers.safetensors`). */
  file: string;
  /** Whether each layer has a `router.bias`. */
  bias: boolean;
  /** How the routers were initialised (e.g. "centroid", "normal"). */
  init: string;
  /** The stage type that trained them. */
  trained_by: string;
  [key: string]: unknown;
}

/** One provenance entry: which stage touched the folder. Extra keys (e.g. `mode: "hard"`) are kept. */
export interface LteProvenance {
  stage: string;
  type: string;
  hash: string;
  /** ISO 8601 time. */
  time: string;
  [key: string]: unknown;
}

/** Contents of `lte.json`. Unknown top-level keys are preserved by read/write. */
export interface LteMeta {
  format: typeof LTE_FORMAT;
  expert_size: number;
  n_layer: number;
  d_ff: number;
  d_model: number;
  experts_per_layer: number;
  /** Hard-routing threshold τ in (0, 1). */
  tau: number;
  /** Per layer, d_ff ints: new neuron i = old neuron permutation[l][i]. */
  permutation: number[][];
  grouping: LteGrouping;
  routers: LteRoutersInfo | null;
  /** "lte" for LTE models; baselines may record their own name. */
  method: string;
  provenance: LteProvenance[];
  [key: string]: unknown;
}

/** A problem with an LTE artifact; the message names the file and the key or tensor. */
export class LteArtifactError extends Error {
  readonly file: string;
  readonly key: string | undefined;
  constructor(file: string, message: string, key?: string, options?: ErrorOptions) {
    super(`${file}: ${key !== undefined ? `key "${key}": ` : ""}${message}`, options);
    this.name = "LteArtifactError";
    this.file = file;
    this.key = key;
  }
}

/** Tensor name of layer `i`'s router weight in `routers.safetensors`. */
export function routerWeightName(i: number): string {
  return `layers.${i}.router.weight`;
}

/** Tensor name of layer `i`'s router bias in `routers.safetensors`. */
export function routerBiasName(i: number): string {
  return `layers.${i}.router.bias`;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function posInt(file: string, obj: Record<string, unknown>, key: string): number {
  const v = obj[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw new LteArtifactError(file, `must be a positive integer, got ${JSON.stringify(v)}`, key);
  }
  return v;
}

function str(file: string, obj: Record<string, unknown>, key: string, path = key): string {
  const v = obj[key];
  if (typeof v !== "string") throw new LteArtifactError(file, `must be a string, got ${JSON.stringify(v)}`, path);
  return v;
}

function finite(file: string, obj: Record<string, unknown>, key: string, path = key): number {
  const v = obj[key];
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new LteArtifactError(file, `must be a finite number, got ${JSON.stringify(v)}`, path);
  }
  return v;
}

/**
 * Checks a parsed `lte.json` object (and, when given, its agreement with the model config).
 * Returns it typed. `file` names the source in errors.
 */
export function validateLteMeta(raw: unknown, file: string, config?: ModelConfig): LteMeta {
  if (!isObj(raw)) throw new LteArtifactError(file, "must be a JSON object");
  if (raw.format !== LTE_FORMAT) {
    throw new LteArtifactError(file, `must be "${LTE_FORMAT}", got ${JSON.stringify(raw.format)}`, "format");
  }
  const expertSize = posInt(file, raw, "expert_size");
  const nLayer = posInt(file, raw, "n_layer");
  const dFf = posInt(file, raw, "d_ff");
  const dModel = posInt(file, raw, "d_model");
  const experts = posInt(file, raw, "experts_per_layer");
  if (dFf % expertSize !== 0) {
    throw new LteArtifactError(file, `expert_size ${expertSize} does not divide d_ff ${dFf}`, "expert_size");
  }
  if (experts * expertSize !== dFf) {
    throw new LteArtifactError(
      file,
      `${experts} experts x expert_size ${expertSize} != d_ff ${dFf} (expected ${dFf / expertSize})`,
      "experts_per_layer",
    );
  }
  const tau = finite(file, raw, "tau");
  if (!(tau > 0 && tau < 1)) throw new LteArtifactError(file, `must be in (0, 1), got ${tau}`, "tau");
  if (config) {
    const pairs: [string, number, number, string][] = [
      ["n_layer", nLayer, config.n_layer, "n_layer / num_hidden_layers"],
      ["d_ff", dFf, config.d_ff, "n_inner / intermediate_size"],
      ["d_model", dModel, config.d_model, "n_embd / hidden_size"],
    ];
    for (const [key, got, want, hfKey] of pairs) {
      if (got !== want) {
        throw new LteArtifactError(file, `is ${got} but the model's config.json has ${hfKey} = ${want}`, key);
      }
    }
  }
  const perm = raw.permutation;
  if (!Array.isArray(perm) || perm.length !== nLayer) {
    throw new LteArtifactError(file, `must be an array of n_layer (${nLayer}) arrays`, "permutation");
  }
  const seen = new Uint8Array(dFf);
  perm.forEach((p, l) => {
    if (!Array.isArray(p) || p.length !== dFf) {
      throw new LteArtifactError(file, `must hold d_ff (${dFf}) ints`, `permutation[${l}]`);
    }
    seen.fill(0);
    for (let i = 0; i < dFf; i++) {
      const v = p[i];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= dFf || seen[v]) {
        throw new LteArtifactError(
          file,
          `is not a permutation of 0..${dFf - 1} (entry ${i} = ${JSON.stringify(v)})`,
          `permutation[${l}]`,
        );
      }
      seen[v] = 1;
    }
  });
  const g = raw.grouping;
  if (!isObj(g)) throw new LteArtifactError(file, "must be an object", "grouping");
  const method = str(file, g, "method", "grouping.method");
  if (!["kmeans", "random", "coactivation"].includes(method)) {
    throw new LteArtifactError(file, `must be kmeans, random or coactivation, got "${method}"`, "grouping.method");
  }
  finite(file, g, "seed", "grouping.seed");
  finite(file, g, "mean_intra_cosine", "grouping.mean_intra_cosine");
  finite(file, g, "random_intra_cosine", "grouping.random_intra_cosine");
  const r = raw.routers;
  if (r !== null) {
    if (!isObj(r)) throw new LteArtifactError(file, "must be null or an object", "routers");
    const f = str(file, r, "file", "routers.file");
    if (f === "" || f.includes("/") || f.includes("\\") || f === "." || f === "..") {
      throw new LteArtifactError(file, `must be a plain file name inside the model folder, got "${f}"`, "routers.file");
    }
    if (typeof r.bias !== "boolean") {
      throw new LteArtifactError(file, `must be a boolean, got ${JSON.stringify(r.bias)}`, "routers.bias");
    }
    str(file, r, "init", "routers.init");
    str(file, r, "trained_by", "routers.trained_by");
  }
  str(file, raw, "method");
  if (!Array.isArray(raw.provenance)) throw new LteArtifactError(file, "must be an array", "provenance");
  raw.provenance.forEach((p, i) => {
    if (!isObj(p)) throw new LteArtifactError(file, "must be an object", `provenance[${i}]`);
    for (const k of ["stage", "type", "hash", "time"]) str(file, p, k, `provenance[${i}].${k}`);
  });
  return raw as LteMeta;
}

/**
 * Reads `lte.json` of a model folder; null when the folder has none (a dense model). Validates
 * the file and, when the folder has a `config.json`, its agreement with the model (layers, d_ff,
 * d_model). Pass `config` to validate against a config held in memory instead.
 */
export function readLteMeta(dir: string, config?: ModelConfig): LteMeta | null {
  const file = join(dir, LTE_META_FILE);
  if (!existsSync(file)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new LteArtifactError(file, `invalid JSON: ${(e as Error).message}`, undefined, { cause: e });
  }
  const cfg = config ?? (existsSync(join(dir, "config.json")) ? readCheckpointConfig(dir) : undefined);
  return validateLteMeta(raw, file, cfg);
}

/** Validates `meta` (against the folder's config.json when present) and writes `lte.json` atomically. */
export function writeLteMeta(dir: string, meta: LteMeta, config?: ModelConfig): void {
  const file = join(dir, LTE_META_FILE);
  const cfg = config ?? (existsSync(join(dir, "config.json")) ? readCheckpointConfig(dir) : undefined);
  validateLteMeta(meta, file, cfg);
  // One permutation row per line keeps the file readable and diffable.
  const { permutation, ...rest } = meta;
  const head = JSON.stringify({ ...rest, permutation: "@@PERM@@" }, null, 2);
  const rows = permutation.map((p) => `    ${JSON.stringify(p)}`).join(",\n");
  const text = head.replace(`"@@PERM@@"`, permutation.length ? `[\n${rows}\n  ]` : "[]") + "\n";
  writeFileAtomicSync(file, text);
}

/**
 * Reads the routers named by `meta.routers`: a map from tensor name (`layers.{i}.router.weight`,
 * and `layers.{i}.router.bias` when `meta.routers.bias`) to f32 data, checked against the shapes
 * `meta` implies ([experts_per_layer, d_model] and [experts_per_layer]).
 */
export function readRouters(dir: string, meta: LteMeta): Map<string, Float32Array> {
  const metaFile = join(dir, LTE_META_FILE);
  if (meta.routers === null) {
    throw new LteArtifactError(metaFile, "is null: this model has no routers (run router-train first)", "routers");
  }
  const file = join(dir, meta.routers.file);
  if (!existsSync(file)) {
    throw new LteArtifactError(file, `not found (named by ${LTE_META_FILE} key "routers.file")`);
  }
  const st = readSafetensors(file);
  const out = new Map<string, Float32Array>();
  const want = new Map<string, number[]>();
  for (let i = 0; i < meta.n_layer; i++) {
    want.set(routerWeightName(i), [meta.experts_per_layer, meta.d_model]);
    if (meta.routers.bias) want.set(routerBiasName(i), [meta.experts_per_layer]);
  }
  for (const [name, shape] of want) {
    if (!st.has(name)) {
      throw new LteArtifactError(
        file,
        `missing tensor ${name} (${LTE_META_FILE}: ${meta.n_layer} layers, routers.bias = ${meta.routers.bias})`,
      );
    }
    const info = st.info(name);
    if (info.shape.join(",") !== shape.join(",")) {
      throw new LteArtifactError(
        file,
        `tensor ${name} has shape [${info.shape.join(", ")}], expected [${shape.join(", ")}] ` +
          `(experts_per_layer ${meta.experts_per_layer}, d_model ${meta.d_model})`,
      );
    }
    out.set(name, st.getF32(name));
  }
  const extra = st.names().filter((n) => !want.has(n));
  if (extra.length > 0) {
    throw new LteArtifactError(
      file,
      `unexpected tensors ${extra.slice(0, 5).join(", ")}${extra.length > 5 ? ` (+${extra.length - 5} more)` : ""} ` +
        `(${LTE_META_FILE}: ${meta.n_layer} layers, routers.bias = ${meta.routers.bias})`,
    );
  }
  return out;
}

/**
 * Writes router tensors (names as {@linkcode routerWeightName} / {@linkcode routerBiasName}) to
 * `routers.safetensors` (or `file`) in `dir`, shapes derived from `meta` (default: the folder's
 * `lte.json`). Every layer needs a weight; biases are all-or-none. Returns the file name; the
 * caller records it (with `bias`) in `meta.routers` and writes `lte.json`.
 */
export function writeRouters(
  dir: string,
  arrays: Map<string, Float32Array> | Record<string, Float32Array>,
  meta?: LteMeta,
  file = ROUTERS_FILE,
): string {
  const m = meta ?? readLteMeta(dir);
  const path = join(dir, file);
  if (!m) throw new LteArtifactError(join(dir, LTE_META_FILE), "not found: write lte.json before the routers");
  const map = arrays instanceof Map ? arrays : new Map(Object.entries(arrays));
  const hasBias = map.has(routerBiasName(0));
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (let i = 0; i < m.n_layer; i++) {
    const entries: [string, number[]][] = [[routerWeightName(i), [m.experts_per_layer, m.d_model]]];
    if (hasBias) entries.push([routerBiasName(i), [m.experts_per_layer]]);
    else if (map.has(routerBiasName(i))) {
      throw new LteArtifactError(path, `has ${routerBiasName(i)} but not ${routerBiasName(0)}: biases are all or none`);
    }
    for (const [name, shape] of entries) {
      const data = map.get(name);
      if (!data) throw new LteArtifactError(path, `missing tensor ${name} (${m.n_layer} layers)`);
      const n = shape.reduce((a, b) => a * b, 1);
      if (data.length !== n) {
        throw new LteArtifactError(path, `tensor ${name} has ${data.length} values, expected [${shape.join(", ")}]`);
      }
      tensors[name] = { dtype: "F32", shape, data };
    }
  }
  const extra = [...map.keys()].filter((n) => !(n in tensors));
  if (extra.length > 0) throw new LteArtifactError(path, `unexpected tensors ${extra.slice(0, 5).join(", ")}`);
  writeSafetensors(path, tensors, { format: "pt", lte_format: LTE_FORMAT });
  return file;
}

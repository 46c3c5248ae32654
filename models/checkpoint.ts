/**
 * Hugging Face-compatible checkpoints: a folder with `config.json` and `model.safetensors` under
 * the HF tensor names and layouts, which `transformers` loads with `from_pretrained(folder)`, and
 * which this module loads from HF-saved folders. Optional training state for exact resume lives
 * beside it (`optimizer.safetensors`, `trainer_state.json`) and is ignored by HF.
 *
 * Every file is written atomically (temp file + rename), and a checkpoint folder is first
 * written under a temporary name and renamed into place, so an interrupted save never leaves a
 * half-written checkpoint where a loader looks.
 *
 * @module
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { fsyncDir, writeFileAtomicSync } from "../io/atomic.ts";
import { basename, dirname, join } from "node:path";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { fromHfConfig, type ModelConfig, toHfConfig } from "./config.ts";
import { DecoderLM, paramSpecs } from "./decoder.ts";
import type { Device } from "../tensor/mod.ts";

/** Thrown for unusable checkpoint folders; names the file and the tensor or key. */
export class CheckpointError extends Error {
  readonly file: string;
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(`${file}: ${message}`, options);
    this.name = "CheckpointError";
    this.file = file;
  }
}

/** Names HF may use for the same tensor (GPT-2 checkpoints saved from GPT2Model lack the prefix). */
function aliases(name: string): string[] {
  return name.startsWith("transformer.") ? [name, name.slice("transformer.".length)] : [name];
}

/** Buffers and tied copies that HF files may contain and that are not parameters here. */
function ignorable(name: string, config: ModelConfig): boolean {
  if (/\.attn\.(masked_)?bias$/.test(name)) return true; // GPT-2 causal-mask buffers
  if (name.endsWith("rotary_emb.inv_freq")) return true; // old LLaMA buffers
  return name === "lm_head.weight" && config.tie_embeddings;
}

/** Writes `config.json` + `model.safetensors` (+ extra files) into `dir`, atomically as a folder. */
export function saveCheckpoint(
  dir: string,
  model: DecoderLM,
  extra: {
    files?: Record<string, string | Uint8Array>;
    metadata?: Record<string, string>;
    /** Extra safetensors files by file name (e.g. optimizer state), written into the same folder. */
    safetensors?: Record<string, Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }>>;
    /** Special token ids written to config.json (HF `generate` reads them); null when absent. */
    special?: { bos?: number | undefined; eos?: number | undefined };
  } = {},
): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp-${Deno.pid}`);
  const old = join(parent, `.${basename(dir)}.old-${Deno.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    const arrays = model.toArrays();
    for (const s of paramSpecs(model.config)) {
      tensors[s.name] = { dtype: "F32", shape: s.shape, data: arrays.get(s.name)! };
    }
    writeSafetensors(join(tmp, "model.safetensors"), tensors, { format: "pt", ...extra.metadata });
    const hf = {
      ...toHfConfig(model.config),
      bos_token_id: extra.special?.bos ?? null,
      eos_token_id: extra.special?.eos ?? null,
    };
    writeFileAtomicSync(join(tmp, "config.json"), JSON.stringify(hf, null, 2) + "\n");
    for (const [name, data] of Object.entries(extra.files ?? {})) writeFileAtomicSync(join(tmp, name), data);
    for (const [name, t] of Object.entries(extra.safetensors ?? {})) writeSafetensors(join(tmp, name), t);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  // Swap into place, keeping the previous checkpoint until the new one is in place. A leftover
  // from an earlier crash of a process with the same pid would block the first rename: clear it.
  rmSync(old, { recursive: true, force: true });
  const hadOld = existsSync(dir);
  if (hadOld) renameSync(dir, old);
  try {
    renameSync(tmp, dir);
  } catch (e) {
    if (hadOld) renameSync(old, dir);
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncDir(parent);
  rmSync(old, { recursive: true, force: true });
}

/**
 * Finishes an interrupted `saveCheckpoint` swap: if `dir` is missing but a previous version was
 * moved aside (`.<name>.old-<pid>`) and the new one never renamed into place, moves the newest
 * old version back. Returns true when it restored one.
 */
export function recoverCheckpoint(dir: string): boolean {
  if (existsSync(dir)) return false;
  const parent = dirname(dir), prefix = `.${basename(dir)}.old-`;
  let names: string[];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith(prefix));
  } catch {
    return false;
  }
  const newest = names.map((n) => join(parent, n)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (!newest) return false;
  renameSync(newest, dir);
  return true;
}

/** Reads and resolves `config.json` of a checkpoint folder. */
export function readCheckpointConfig(dir: string): ModelConfig {
  const file = join(dir, "config.json");
  if (!existsSync(file)) {
    throw new CheckpointError(file, "not found (a checkpoint folder needs config.json and model.safetensors)");
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new CheckpointError(file, `invalid JSON: ${(e as Error).message}`, { cause: e });
  }
  try {
    return fromHfConfig(json, file);
  } catch (e) {
    throw new CheckpointError(file, (e as Error).message.replace(`${file}: `, ""), { cause: e });
  }
}

/** Loads a checkpoint folder (ours or HF-saved) onto a device. */
export function loadCheckpoint(dir: string, opts: { device: Device }): DecoderLM {
  const config = readCheckpointConfig(dir);
  const file = join(dir, "model.safetensors");
  if (!existsSync(file)) throw new CheckpointError(file, "not found");
  const st = readSafetensors(file);
  const names = new Set(st.names());
  const arrays = new Map<string, Float32Array>();
  const used = new Set<string>();
  for (const s of paramSpecs(config)) {
    const found = aliases(s.name).find((n) => names.has(n));
    if (!found) {
      throw new CheckpointError(file, `missing tensor ${s.name} (config.json describes a ${config.family} model)`);
    }
    const info = st.info(found);
    const want = s.shape.join(", "), got = info.shape.join(", ");
    if (want !== got) {
      throw new CheckpointError(file, `tensor ${found} has shape [${got}], config.json implies [${want}]`);
    }
    arrays.set(s.name, st.getF32(found));
    used.add(found);
  }
  const unknown = [...names].filter((n) => !used.has(n) && !ignorable(n, config));
  if (unknown.length > 0) {
    throw new CheckpointError(
      file,
      `unexpected tensors ${unknown.slice(0, 5).join(", ")}${
        unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ""
      }: ` +
        `not part of a ${config.family} model with this config.json`,
    );
  }
  return DecoderLM.fromArrays(config, arrays, { device: opts.device, source: file });
}

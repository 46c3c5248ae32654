/**
 * Pipeline YAML: parsing, `key.path=value` overrides, and validation of the whole file (top-level
 * keys and every stage's keys against its registered schema) before anything runs.
 *
 * Every problem is collected into one {@linkcode ConfigError}; each issue carries the key path,
 * the stage name, expected vs received, and a `file:line:col` (or the override it came from), so
 * the CLI can print them like compiler errors:
 *
 * ```
 * examples/x.yaml:12:7 stages[0].optimizer.lr (stage train): expected number, received string "fast"
 * ```
 *
 * @module
 */
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parse as parseYamlValue,
  parseDocument,
  stringify,
  YAMLParseError,
} from "yaml";
import type { Document } from "yaml";
import { z } from "zod";
import { getStage, listStages } from "./registry.ts";
import { closest, didYouMean } from "./_suggest.ts";
import { dirname, resolve } from "node:path";
import {
  describe,
  describeIssue,
  findUnknownKeys,
  isPlainObject,
  type KeyPath,
  objectKeysAt,
  schemaAt,
} from "./_zod.ts";
import { type PipelineSettings, RESERVED_STAGE_KEYS, type StageDefinition } from "./stage.ts";
import {
  type Expanded,
  joinVariants,
  renameRefs,
  setPath,
  type SweepCombo,
  sweepCombos,
  variantName,
  type VariantValues,
} from "./sweep.ts";

export type { KeyPath } from "./_zod.ts";

/** One validation problem. */
export interface ConfigIssue {
  /** Key path in display form: `stages[0].optimizer.lr` (empty string for the whole document). */
  path: string;
  /** Name of the stage the issue is in, when it is inside `stages[i]` and the stage has a name. */
  stage?: string;
  /** What is wrong, e.g. `expected number, received string "fast"`. */
  message: string;
  /** What the schema wanted, e.g. `number` (when known). */
  expected?: string;
  /** What the YAML had, e.g. `string "fast"` (when known). */
  received?: string;
  /** Where: `file:line:col`, or `override #2 'stages.train.optimizer.lr=abc'`. */
  location: string;
  /** The YAML file, for issues located in it. */
  file?: string;
  /** 1-based line in {@linkcode file}. */
  line?: number;
  /** 1-based column in {@linkcode file}. */
  col?: number;
  /** 1-based index of the override the issue comes from. */
  override?: number;
}

/** Every problem found in a pipeline config, reported together. */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** The problems, in file order, override problems last. */
  readonly issues: ConfigIssue[];
  /** The config file (or `<string>`). */
  readonly file: string;

  /** @param file Config file name. @param issues At least one problem. */
  constructor(file: string, issues: ConfigIssue[]) {
    const n = issues.length;
    super(
      `Invalid pipeline config ${file}: ${n} ${n === 1 ? "error" : "errors"}\n${issues.map(formatIssue).join("\n")}`,
    );
    this.file = file;
    this.issues = issues;
  }
}

/** The YAML itself is malformed (bad indentation, unclosed bracket, duplicate key, ...). */
export class ConfigSyntaxError extends SyntaxError {
  override name = "ConfigSyntaxError";
  /** The config file (or `<string>`). */
  readonly file: string;
  /** 1-based line of the first error. */
  readonly line: number;
  /** 1-based column of the first error. */
  readonly col: number;
  /** The yaml library's error code, e.g. `BAD_INDENT`. */
  readonly code: string;

  /** Build from the first error's position; `message` lists every error with its position. */
  constructor(message: string, opts: { file: string; line: number; col: number; code: string }) {
    super(message);
    this.file = opts.file;
    this.line = opts.line;
    this.col = opts.col;
    this.code = opts.code;
  }
}

/** `location path (stage s): message`, the CLI's one-line form of an issue. */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.path === "" ? "" : ` ${issue.path}${issue.stage !== undefined ? ` (stage ${issue.stage})` : ""}`;
  return `${issue.location}${where}: ${issue.message}`;
}

/** A stage of a validated pipeline. */
export interface ResolvedStage<C = unknown> {
  /** `stages[i].name`. */
  name: string;
  /** `stages[i].type`. */
  type: string;
  /** Position in the file (= run order). */
  index: number;
  /** The stage's own keys after validation, defaults applied. */
  config: C;
  /** Names of the upstream stages it consumes (`definition.inputs(config)`). */
  inputs: string[];
  /** The registered stage type. */
  definition: StageDefinition<C>;
  /** For a sweep variant (or a stage fanned out along one): the unexpanded name, e.g. `train`. */
  base?: string;
  /** For a sweep variant: its values by shortened key, e.g. `{ lr: 0.001, seed: 1 }`. */
  variant?: Record<string, unknown>;
  /** The seed this stage runs with when a sweep sets it (else the pipeline's `seed`). */
  seed?: number;
}

/** A validated pipeline: what {@linkcode parseConfig} returns and the runner consumes. */
export interface PipelineConfig {
  /** Top-level settings, defaults applied. */
  settings: PipelineSettings;
  /** Stages in file (= run) order. */
  stages: ResolvedStage[];
  /** Config file name as given (or `<string>`). */
  file: string;
  /** The override arguments that were applied, in order. */
  overrides: string[];
}

/** Options of {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** File name used in error locations. @default {"<string>"} */
  file?: string;
  /** `key.path=value` overrides applied to the document before validation, in order. */
  overrides?: string[];
}

const NAME_RE = /^[a-z0-9_-]+$/;

/** Longest stage / pipeline name: names become folder names (with `.old-<time>` suffixes). */
export const MAX_NAME_LENGTH = 100;

/** Largest config file accepted (real pipelines are a few kB; a huge file is a mistake or an attack). */
export const MAX_CONFIG_BYTES = 1 << 20;

function tooLarge(file: string, size: number): ConfigSyntaxError {
  return new ConfigSyntaxError(
    `Config file too large: ${file} is ${(size / 1048576).toFixed(1)} MiB; pipeline configs are limited to ` +
      `${MAX_CONFIG_BYTES / 1048576} MiB (use sweep: for many similar stages)`,
    { file, line: 1, col: 1, code: "TOO_LARGE" },
  );
}

/** Report duplicate keys of every mapping as `DUPLICATE_KEY` errors, in one linear pass. */
function findDuplicateKeys(doc: Document): void {
  const stack: unknown[] = [doc.contents];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isMap(node)) {
      const seen = new Set<unknown>();
      for (const pair of node.items as any[]) {
        const key = isScalar(pair.key) ? pair.key.value : pair.key;
        if (isScalar(pair.key) && seen.has(key)) {
          doc.errors.push(
            new YAMLParseError([pair.key.range[0], pair.key.range[1]], "DUPLICATE_KEY", `Map keys must be unique`),
          );
        }
        seen.add(key);
        stack.push(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) stack.push(item);
    }
  }
}

/** Top-level keys. Stage items are checked one by one against their type's schema. */
const PipelineSchema = z.strictObject({
  name: z.string().regex(NAME_RE).max(MAX_NAME_LENGTH),
  description: z.string().optional(),
  seed: z.number().int().nonnegative().default(0),
  device: z.enum(["cpu", "cuda", "auto"]).default("cpu"),
  run_dir: z.string().min(1).optional(),
  stages: z.array(z.unknown()).min(1),
});

const StageHeaderSchema = z.looseObject({
  name: z.string().regex(NAME_RE).max(MAX_NAME_LENGTH),
  type: z.string().min(1),
});

/**
 * Read and validate a pipeline file. See {@linkcode parseConfig}.
 *
 * @throws {Deno.errors.NotFound} If the file does not exist.
 */
export async function loadConfig(path: string, opts: Omit<ParseConfigOptions, "file"> = {}): Promise<PipelineConfig> {
  const size = (await Deno.stat(path)).size;
  if (size > MAX_CONFIG_BYTES) throw tooLarge(path, size);
  const text = await Deno.readTextFile(path);
  return parseConfig(text, { ...opts, file: path });
}

/**
 * Parse and validate pipeline YAML text; apply overrides first. Nothing is run or written.
 *
 * @throws {ConfigSyntaxError} If the YAML is malformed.
 * @throws {ConfigError} With every validation problem, if there is any.
 *
 * @example
 * ```ts
 * const config = parseConfig(text, { file: "examples/quickstart.yaml", overrides: ["seed=3"] });
 * config.stages.map((s) => s.name); // ["train", "eval"]
 * ```
 */
export function parseConfig(text: string, opts: ParseConfigOptions = {}): PipelineConfig {
  const file = opts.file ?? "<string>";
  const overrides = opts.overrides ?? [];
  if (text.length > MAX_CONFIG_BYTES) throw tooLarge(file, new TextEncoder().encode(text).length);
  const lineCounter = new LineCounter();
  // Duplicate keys are found by our own linear pass (the yaml library's check is quadratic per map).
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length === 0) findDuplicateKeys(doc);
  if (doc.errors.length > 0) throw syntaxError(file, doc, lineCounter);

  const v = new Validator(doc, lineCounter, file);
  if (doc.contents === null) doc.contents = doc.createNode({}) as any;
  if (!isMap(doc.contents)) {
    v.add([], "expected a mapping of pipeline keys (name, stages, ...) at the top level");
    throw v.error();
  }
  overrides.forEach((text, i) => v.applyOverride(text, i + 1));
  const result = v.validate();
  if (v.issues.length > 0) throw v.error();
  return { ...result!, file, overrides: [...overrides] };
}

/**
 * Absolute folder of the config file, against which stages resolve relative paths: the file's
 * folder, or the working directory for a config parsed from a string.
 */
export function configDirOf(config: Pick<PipelineConfig, "file">): string {
  return config.file === "<string>" ? Deno.cwd() : dirname(resolve(config.file));
}

/** The resolved config as YAML, as written to `<run_dir>/config.yaml` and printed by `validate`. */
export function resolvedConfigYaml(config: PipelineConfig): string {
  const s = config.settings;
  const doc = {
    name: s.name,
    ...(s.description !== undefined ? { description: s.description } : {}),
    seed: s.seed,
    device: s.device,
    run_dir: s.run_dir,
    stages: config.stages.map((st) => ({
      name: st.name,
      type: st.type,
      ...(st.base !== undefined ? { variant: { of: st.base, ...st.variant } } : {}),
      ...(st.config as object),
    })),
  };
  return stringify(doc, { lineWidth: 0 });
}

function syntaxError(file: string, doc: Document, lc: LineCounter): ConfigSyntaxError {
  const lines = doc.errors.map((e) => {
    const { line, col } = lc.linePos(e.pos[0]);
    return { line, col, code: e.code, text: `${file}:${line}:${col} ${e.message.split("\n")[0]}` };
  });
  const first = lines[0]!;
  const more = lines.length > 1 ? `\n${lines.slice(1).map((l) => l.text).join("\n")}` : "";
  return new ConfigSyntaxError(`Malformed YAML: ${first.text}${more}`, { file, ...first });
}

// ---------------------------------------------------------------------------------------------
// Validation internals

interface AppliedOverride {
  index: number;
  text: string;
  /** Everything under this path was created or replaced by the override. */
  root: KeyPath;
}

class Validator {
  issues: ConfigIssue[] = [];
  #overrides: AppliedOverride[] = [];
  #js: any;
  /** Stages that failed schema validation, with the references found in their raw keys. */
  #partial: { name: string; index: number; inputs: string[] }[] = [];
  /** The sweep variant being validated (issues inside it name the variant). */
  #variant: { index: number; name: string } | undefined;

  constructor(readonly doc: Document, readonly lc: LineCounter, readonly file: string) {}

  error(): ConfigError {
    // Sweep variants of one stage share most of their config: report each problem once.
    const seen = new Set<string>();
    this.issues = this.issues.filter((i) => {
      const key = `${i.location}|${i.path}|${i.message}`;
      return seen.has(key) ? false : (seen.add(key), true);
    });
    const fileIssues = this.issues.filter((i) => i.override === undefined);
    fileIssues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
    const overrideIssues = this.issues.filter((i) => i.override !== undefined);
    overrideIssues.sort((a, b) => a.override! - b.override!);
    return new ConfigError(this.file, [...fileIssues, ...overrideIssues]);
  }

  /** Record an issue at `path`; `atKey` points at the key rather than its value (unknown keys). */
  add(path: KeyPath, message: string, extra: { expected?: string; received?: string; atKey?: boolean } = {}) {
    const issue: ConfigIssue = { path: formatPath(path), message, location: "" };
    if (extra.expected !== undefined) issue.expected = extra.expected;
    if (extra.received !== undefined) issue.received = extra.received;
    const variant = this.#variant !== undefined && path[1] === this.#variant.index ? this.#variant.name : undefined;
    const stageName = path[0] === "stages" && typeof path[1] === "number"
      ? variant ?? this.#js?.stages?.[path[1]]?.name ?? this.#docStageName(path[1])
      : undefined;
    if (typeof stageName === "string") issue.stage = stageName;
    const ov = [...this.#overrides].reverse().find((o) => isPrefix(o.root, path));
    if (ov) {
      issue.override = ov.index;
      issue.location = overrideLocation(ov.index, ov.text);
    } else {
      const { line, col } = this.#position(path, extra.atKey ?? false);
      Object.assign(issue, { file: this.file, line, col, location: `${this.file}:${line}:${col}` });
    }
    this.issues.push(issue);
  }

  #docStageName(i: number): unknown {
    const stages = (this.doc.contents as any)?.get?.("stages");
    const item = isSeq(stages) ? stages.items[i] : undefined;
    return isMap(item) ? item.get("name") : undefined;
  }

  /** Deepest YAML node along `path` (the parent map for a missing key) and how deep it got. */
  #walk(path: KeyPath): { node: any; keyNode: any; depth: number } {
    let node: any = this.doc.contents;
    let keyNode: any = undefined;
    let depth = 0;
    for (const seg of path) {
      if (isMap(node)) {
        const pair: any = node.items.find((p: any) => (isScalar(p.key) ? p.key.value : p.key) == seg);
        if (!pair) break;
        keyNode = pair.key;
        node = pair.value?.range ? pair.value : pair.key;
      } else if (isSeq(node) && typeof seg === "number" && node.items[seg] !== undefined) {
        keyNode = undefined;
        node = node.items[seg];
      } else break;
      depth++;
    }
    return { node, keyNode, depth };
  }

  #position(path: KeyPath, atKey: boolean): { line: number; col: number } {
    const { node, keyNode, depth } = this.#walk(path);
    const target = atKey && depth === path.length && keyNode ? keyNode : node;
    return this.lc.linePos(target?.range?.[0] ?? 0);
  }

  applyOverride(text: string, index: number): void {
    const fail = (message: string) => {
      this.issues.push({ path: "", message, location: overrideLocation(index, text), override: index });
    };
    const eq = text.indexOf("=");
    if (eq <= 0) return fail("expected key.path=value");
    const keyText = text.slice(0, eq);
    const valueText = text.slice(eq + 1);
    const path = parseKeyPath(keyText);
    if (!path) return fail(`malformed key path "${keyText}": expected keys joined by dots, e.g. stages.train.lr`);

    if (path[0] === "stages" && path.length >= 2) {
      const stages = (this.doc.contents as any).get("stages");
      const items: any[] = isSeq(stages) ? stages.items : [];
      const names = [...new Set(items.map((it) => (isMap(it) ? it.get("name") : undefined)))]
        .filter((n) => typeof n === "string");
      const seg = path[1]!;
      if (typeof seg === "number" || /^\d+$/.test(seg)) {
        const i = Number(seg);
        if (i >= items.length) return fail(`no stage at index ${i}: the pipeline has ${items.length} stages`);
        path[1] = i;
      } else {
        const i = items.findIndex((it) => isMap(it) && it.get("name") === seg);
        if (i < 0) {
          const list = names.length ? `; stages: ${names.join(", ")}` : "";
          return fail(`no stage named "${seg}"${didYouMean(seg, names as string[])}${list}`);
        }
        path[1] = i;
      }
    }

    let value: unknown;
    try {
      value = parseYamlValue(valueText);
    } catch (err) {
      return fail(`cannot parse value "${valueText}": ${(err as Error).message.split("\n")[0]}`);
    }
    // Typed by the schema: `name=123` keeps the string "123" when the schema wants a string.
    const leaf = this.#schemaAt(path);
    if (leaf && typeof value !== "string" && !leaf.safeParse(value).success && leaf.safeParse(valueText).success) {
      value = valueText;
    }

    const { depth } = this.#walk(path);
    try {
      this.doc.setIn(path, this.doc.createNode(value));
    } catch {
      return fail(`cannot set "${formatPath(path)}": "${formatPath(path.slice(0, depth))}" is not a mapping or list`);
    }
    this.#overrides.push({ index, text, root: path.slice(0, Math.min(depth + 1, path.length)) });
  }

  /**
   * The schema that validates the value at `path`, if the path goes through known objects (and
   * through unions, by the option that the document's current value selects).
   */
  #schemaAt(path: KeyPath): z.ZodType | undefined {
    if (path[0] === "stages" && typeof path[1] === "number" && path.length > 2) {
      if (RESERVED_STAGE_KEYS.includes(String(path[2]))) return StageHeaderSchema.shape[path[2] as "name"];
      const type = this.doc.getIn(["stages", path[1], "type"]) as unknown;
      const def = typeof type === "string" ? getStage(type) : undefined;
      const node: any = this.doc.getIn(["stages", path[1]], true);
      let value: unknown;
      try {
        value = isMap(node) ? node.toJS(this.doc, { maxAliasCount: 1000 }) : undefined;
      } catch { /* validation reports it */ }
      return def ? schemaAt(def.schema, path.slice(2), value) : undefined;
    }
    return schemaAt(PipelineSchema, path);
  }

  validate(): Omit<PipelineConfig, "file" | "overrides"> | undefined {
    let js: any;
    try {
      js = this.doc.toJS({ maxAliasCount: 1000 }) ?? {};
    } catch (err) {
      // The yaml library refuses alias bombs ("Excessive alias count ...") with a bare ReferenceError.
      throw new ConfigSyntaxError(
        `Malformed YAML: ${this.file}: ${(err as Error).message} (too many or too deeply nested *aliases)`,
        { file: this.file, line: 1, col: 1, code: "ALIAS_LIMIT" },
      );
    }
    this.#js = js;
    const top = this.#check(PipelineSchema, js, []);

    const items: unknown[] = Array.isArray(js.stages) ? js.stages : [];
    const stages: (ResolvedStage | undefined)[] = [];
    const firstIndex = new Map<string, number>();
    const expandedOf = new Map<string, Expanded[]>();
    items.forEach((item, i) => stages.push(...this.#expandStage(item, i, firstIndex, expandedOf)));

    // References: inputs must name stages that run earlier.
    const names = [...firstIndex.keys()];
    for (const st of [...stages.filter((x) => x !== undefined), ...this.#partial]) {
      for (const ref of st.inputs) {
        const where = this.#findScalar(["stages", st.index], ref);
        const j = firstIndex.get(ref);
        if (j === undefined) {
          this.add(
            where,
            `stage "${st.name}" consumes "${ref}", which is not a stage in this pipeline${didYouMean(ref, names)}`,
          );
        } else if (j === st.index) {
          this.add(where, `stage "${st.name}" consumes its own output`);
        } else if (j > st.index) {
          this.add(
            where,
            `stage "${st.name}" consumes "${ref}", which runs later: stages run in file order, so move "${ref}" above "${st.name}"`,
          );
        }
      }
    }
    // Never hand back a stage that did not validate, even if (by a gap in the checks) nothing said why.
    const invalid = stages.findIndex((st) => st === undefined);
    if (this.issues.length === 0 && (invalid >= 0 || !top.success)) {
      this.add(invalid >= 0 ? ["stages", invalid] : [], "invalid config (no more detail available)");
    }
    if (this.issues.length > 0 || !top.success) return undefined;
    const t = top.data;
    const settings: PipelineSettings = {
      name: t.name,
      seed: t.seed,
      device: t.device,
      run_dir: t.run_dir ?? `runs/${t.name}`,
    };
    if (t.description !== undefined) settings.description = t.description;
    return { settings, stages: stages as ResolvedStage[] };
  }

  /**
   * Validate stage item `i`, expanded into its sweep variants and into the variants of the swept
   * stages it consumes (fan-out; a `gathers` stage type instead consumes every variant).
   */
  #expandStage(
    item: unknown,
    i: number,
    firstIndex: Map<string, number>,
    expandedOf: Map<string, Expanded[]>,
  ): (ResolvedStage | undefined)[] {
    const def = isPlainObject(item) && typeof item.type === "string" ? getStage(item.type) : undefined;
    if (!isPlainObject(item) || !def || typeof item.name !== "string") {
      return [this.#validateStage(item, i, firstIndex)];
    }
    const base = item.name;
    const { sweep, ...plain } = item;
    const rest = Object.fromEntries(Object.entries(plain).filter(([k]) => !RESERVED_STAGE_KEYS.includes(k)));
    let combos: SweepCombo[] = [{ values: {}, assignments: [] }];
    if (Object.hasOwn(item, "sweep")) {
      const r = sweepCombos(sweep, (path) => this.#sweepPathProblem(def, path, rest));
      for (const p of r.problems) {
        const at: KeyPath = ["stages", i, "sweep"];
        if (p.key !== undefined) at.push(p.key);
        if (p.index !== undefined) at.push(p.index);
        this.add(at, p.message, { atKey: p.index === undefined && p.key !== undefined });
      }
      if (r.problems.length > 0) return [this.#validateStage(plain, i, firstIndex)];
      combos = r.combos;
    }
    // The stage's references (from its first variant's config) decide whether it fans out.
    let refs: string[] = [];
    try {
      const probe = structuredClone(rest);
      for (const a of combos[0]!.assignments) setPath(probe, a.path, a.value);
      const parsed = def.schema.safeParse(probe);
      if (parsed.success) refs = def.inputs(parsed.data).filter((r) => typeof r === "string");
    } catch { /* validation below reports it */ }
    const swept = [...new Set(refs)].filter((r) => expandedOf.has(r));
    const rows = def.gathers || swept.length === 0
      ? [{ values: {} as VariantValues, pick: new Map<string, string>(), seed: undefined as number | undefined }]
      : joinVariants(swept.map((r) => ({ base: r, variants: expandedOf.get(r)! })));
    const out: (ResolvedStage | undefined)[] = [];
    const variants: Expanded[] = [];
    for (const row of rows) {
      for (const combo of combos) {
        const clash = Object.keys(combo.values).find((k) => k in row.values);
        if (clash !== undefined) {
          this.add(
            ["stages", i, "sweep"],
            `sweep key "${clash}" is already a variant key of the swept stages "${base}" consumes (${
              swept.join(", ")
            })`,
          );
          return [this.#validateStage(plain, i, firstIndex)];
        }
        const values = { ...row.values, ...combo.values };
        const name = variantName(base, values);
        const clone: Record<string, unknown> = { ...plain, ...(renameRefs(rest, row.pick) as object) };
        for (const a of combo.assignments) setPath(clone, a.path, a.value);
        const seed = combo.seed ?? row.seed;
        const expanded = Object.keys(values).length > 0;
        this.#variant = expanded ? { index: i, name } : undefined;
        const before = this.issues.length;
        const st = this.#validateStage(
          clone,
          i,
          firstIndex,
          expanded ? { name, base, variant: values, seed } : undefined,
        );
        this.#variant = undefined;
        // A problem with a swept value points at that value in the sweep list.
        for (const issue of this.issues.slice(before)) {
          const a = combo.assignments.find((a) => {
            const p = formatPath(["stages", i, ...a.path]);
            return issue.path === p || issue.path.startsWith(`${p}.`) || issue.path.startsWith(`${p}[`);
          });
          if (!a || issue.override !== undefined) continue;
          const { line, col } = this.#position(["stages", i, "sweep", a.key, a.index], false);
          Object.assign(issue, { line, col, location: `${this.file}:${line}:${col}` });
        }
        if (st && def.gathers) {
          st.inputs = [...new Set(st.inputs.flatMap((r) => expandedOf.get(r)?.map((v) => v.name) ?? [r]))];
        }
        out.push(st);
        if (expanded) variants.push(seed !== undefined ? { name, values, seed } : { name, values });
      }
    }
    if (variants.length > 0) expandedOf.set(base, variants);
    return out;
  }

  /** Why a sweep key path does not name a key of the stage's schema, or undefined when it does. */
  #sweepPathProblem(def: StageDefinition, path: string[], rest: Record<string, unknown>): string | undefined {
    if (RESERVED_STAGE_KEYS.includes(path[0]!)) return `sweep cannot vary "${path[0]}"`;
    if (schemaAt(def.schema, path, rest) !== undefined) return undefined;
    for (let n = path.length - 1; n >= 0; n--) {
      const parent = n === 0 ? def.schema : schemaAt(def.schema, path.slice(0, n), rest);
      if (parent === undefined) continue;
      const keys = objectKeysAt(parent, getAt(rest, path.slice(0, n))) ?? [];
      const seg = path[n]!;
      return `sweep key "${path.join(".")}": stage type "${def.type}" has no key "${
        [...path.slice(0, n), seg].join(".")
      }"${didYouMean(seg, keys)}`;
    }
    return `sweep key "${path.join(".")}": no such key in stage type "${def.type}"`;
  }

  #validateStage(
    item: unknown,
    i: number,
    firstIndex: Map<string, number>,
    as?: { name: string; base: string; variant: VariantValues; seed: number | undefined },
  ): ResolvedStage | undefined {
    const at: KeyPath = ["stages", i];
    const issuesBefore = this.issues.length;
    if (!isPlainObject(item)) {
      this.add(at, `expected a mapping with name and type, received ${describe(item)}`, {
        expected: "mapping",
        received: describe(item),
      });
      return undefined;
    }
    const header = StageHeaderSchema.safeParse(item, { reportInput: true });
    if (!header.success) this.#addZodIssues(header.error.issues, at, item);
    const name = as?.name ?? (typeof item.name === "string" ? item.name : undefined);
    if (name !== undefined) {
      const first = firstIndex.get(name);
      if (first !== undefined) {
        const { line } = this.#position(["stages", first, "name"], false);
        this.add([...at, "name"], `duplicate stage name "${name}" (first used by stages[${first}], line ${line})`);
      } else firstIndex.set(name, i);
    }
    if (typeof item.type !== "string") return undefined;
    const def = getStage(item.type);
    if (!def) {
      const types = listStages().map((d) => d.type);
      const list = types.length ? `registered types: ${types.join(", ")}` : "no stage types are registered";
      this.add([...at, "type"], `unknown stage type "${item.type}"${didYouMean(item.type, types)}; ${list}`, {
        expected: types.length ? `one of ${types.join(", ")}` : "a registered stage type",
        received: describe(item.type),
      });
      return undefined;
    }
    const rest = Object.fromEntries(Object.entries(item).filter(([k]) => !RESERVED_STAGE_KEYS.includes(k)));
    const parsed = this.#check(def.schema, rest, at, RESERVED_STAGE_KEYS);
    if (!parsed.success || !header.success) {
      if (this.issues.length === issuesBefore) {
        const why = parsed.success ? "" : `: ${parsed.error.issues.map((x) => x.message).join("; ")}`;
        this.add(at, `invalid stage config${why}`);
      }
      // Best effort, so a bad reference is reported alongside the schema errors: inputs() on the raw keys.
      let inputs: unknown;
      try {
        inputs = def.inputs(rest);
      } catch { /* the schema errors already explain it */ }
      const ok = Array.isArray(inputs) && inputs.every((x) => typeof x === "string");
      this.#partial.push({ name: name ?? `stages[${i}]`, index: i, inputs: ok ? inputs as string[] : [] });
      return undefined;
    }
    let inputs: string[];
    try {
      inputs = def.inputs(parsed.data);
      if (!Array.isArray(inputs) || inputs.some((x) => typeof x !== "string")) {
        throw new TypeError("inputs() must return an array of stage names");
      }
    } catch (err) {
      this.add(at, `stage type "${def.type}" could not list its inputs: ${(err as Error).message}`);
      return undefined;
    }
    const resolved: ResolvedStage = {
      name: name!,
      type: def.type,
      index: i,
      config: parsed.data,
      inputs: [...new Set(inputs)],
      definition: def,
    };
    if (as) {
      resolved.base = as.base;
      resolved.variant = as.variant;
      if (as.seed !== undefined) resolved.seed = as.seed;
    }
    return resolved;
  }

  /** Path of the first scalar equal to `value` under `base` (where a reference was written), else `base`. */
  #findScalar(base: KeyPath, value: string): KeyPath {
    const search = (v: unknown, path: KeyPath): KeyPath | undefined => {
      if (v === value) return path;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const r = search(v[i], [...path, i]);
          if (r) return r;
        }
      } else if (isPlainObject(v)) {
        for (const [k, x] of Object.entries(v)) {
          if (RESERVED_STAGE_KEYS.includes(k) && path.length === base.length) continue;
          const r = search(x, [...path, k]);
          if (r) return r;
        }
      }
      return undefined;
    };
    return search(getAt(this.#js, base), base) ?? base;
  }

  /**
   * Validate `value` against `schema`: every zod issue plus unknown keys at every level (with
   * did-you-mean), each reported once.
   */
  #check<T>(schema: z.ZodType<T>, value: unknown, prefix: KeyPath, extraAllowed: readonly string[] = []) {
    const parsed = schema.safeParse(value, { reportInput: true });
    const reported = this.#addUnknownKeys(schema, value, prefix, extraAllowed);
    if (!parsed.success) this.#addZodIssues(parsed.error.issues, prefix, value, { schema, reported, extraAllowed });
    return parsed;
  }

  /**
   * Report zod issues. `unrecognized_keys` issues are reported only for keys that
   * {@linkcode findUnknownKeys} did not already report (given in `unknown.reported`).
   */
  #addZodIssues(
    issues: z.core.$ZodIssue[],
    prefix: KeyPath,
    root: unknown,
    unknown?: { schema: z.ZodType; reported: Set<string>; extraAllowed: readonly string[] },
  ) {
    for (const issue of issues) {
      const rel = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p)) as KeyPath;
      const path = [...prefix, ...rel];
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          if (unknown?.reported.has(formatPath([...path, key]))) continue;
          const keys = unknown ? objectKeysAt(schemaAt(unknown.schema, rel, root), getAt(root, rel)) ?? [] : [];
          this.#unknownKey([...path, key], key, [...(rel.length === 0 ? unknown?.extraAllowed ?? [] : []), ...keys]);
        }
        continue;
      }
      const value = getAt(root, rel);
      const present = value !== undefined || hasAt(root, rel);
      const { message, expected } = describeIssue(issue, value, present, rel[rel.length - 1]);
      const extra: { expected?: string; received?: string } = {};
      if (expected !== undefined) extra.expected = expected;
      if (present) extra.received = describe(value);
      this.add(path, message, extra);
    }
  }

  /** Report unknown keys at every level; returns their paths (formatted). */
  #addUnknownKeys(schema: z.ZodType, value: unknown, prefix: KeyPath, extraAllowed: readonly string[] = []) {
    const found: { path: KeyPath; key: string; allowed: string[] }[] = [];
    findUnknownKeys(schema, value, [], found, [...extraAllowed]);
    const reported = new Set<string>();
    for (const u of found) {
      this.#unknownKey([...prefix, ...u.path], u.key, u.allowed);
      reported.add(formatPath([...prefix, ...u.path]));
    }
    return reported;
  }

  #unknownKey(path: KeyPath, key: string, allowed: string[]) {
    const hint = closest(key, allowed);
    const message = hint !== undefined
      ? `unknown key "${key}" (did you mean "${hint}"?)`
      : `unknown key "${key}"; allowed keys: ${allowed.join(", ") || "none"}`;
    this.add(path, message, { expected: `one of ${allowed.join(", ")}`, atKey: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function overrideLocation(index: number, text: string): string {
  return `override #${index} '${text}'`;
}

/** `["stages", 0, "optimizer", "lr"]` → `stages[0].optimizer.lr`. */
export function formatPath(path: KeyPath): string {
  let out = "";
  for (const seg of path) out += typeof seg === "number" ? `[${seg}]` : out === "" ? seg : `.${seg}`;
  return out;
}

/** `stages.train.lr` / `stages[0].lr` / `a.b[2].c` → key path, or undefined when malformed. */
function parseKeyPath(text: string): KeyPath | undefined {
  const path: KeyPath = [];
  for (const part of text.split(".")) {
    const m = /^([^.[\]=\s]+)((?:\[\d+\])*)$/.exec(part);
    if (!m) return undefined;
    path.push(m[1]!);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) path.push(Number(idx[1]));
  }
  return path;
}

function isPrefix(prefix: KeyPath, path: KeyPath): boolean {
  return prefix.length <= path.length && prefix.every((seg, i) => String(seg) === String(path[i]));
}

function getAt(root: unknown, path: KeyPath): unknown {
  let v: any = root;
  for (const seg of path) v = v === null || typeof v !== "object" ? undefined : v[seg];
  return v;
}

function hasAt(root: unknown, path: KeyPath): boolean {
  if (path.length === 0) return true;
  const parent = getAt(root, path.slice(0, -1));
  return parent !== null && typeof parent === "object" && Object.hasOwn(parent, path[path.length - 1]!);
}

/**
 * Builds the native libraries into build/:
 *   build/liblte_cpu.so   always (gcc, OpenMP)
 *   build/liblte_cuda.so  when nvcc is on PATH (or $NVCC / $CUDA_HOME/bin/nvcc)
 *
 * Usage: deno task build [--backend cpu|cuda|all] [--force] [--require-cuda]
 *
 * Rebuilds only what changed: each object file is keyed by the hash of its source plus every
 * header, and each library by the build id (cuda/sources.ts), so an unchanged tree builds in
 * milliseconds. Outputs are written to a temporary name and renamed, so an interrupted build never
 * leaves a half-written library where the loader looks.
 *
 * cuBLAS is NOT linked: the CUDA backend dlopen()s libcublas at context creation (see
 * cuda/cuda/blas.cu). That is what lets CI (nvcc, no cuBLAS, no GPU) compile every kernel, and
 * the GPU machine run them. The CUDA runtime is linked statically (nvcc's default), so loading the
 * library on a machine without a driver works and reports LTE_STATUS_NO_DEVICE instead of
 * failing in dlopen.
 *
 * Environment: LTE_CUDA_ARCH (default "90": H100/H200; e.g. "80;90"), NVCC, CC.
 * @module
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  allInputs,
  type BackendKind,
  BUILD_DIR,
  compiledSources,
  CUDA_DIR,
  libraryFileName,
  sourceHash,
} from "./sources.ts";

const CPU_FLAGS = [
  "-std=c11",
  "-O2",
  "-fPIC",
  "-fopenmp",
  "-fvisibility=hidden",
  "-Wall",
  "-Wextra",
  "-Wno-unused-parameter",
  "-Werror=implicit-function-declaration",
  "-Werror=incompatible-pointer-types",
];
const CUDA_FLAGS = [
  "-std=c++17",
  "-O3",
  "-Xcompiler",
  "-fPIC,-fvisibility=hidden",
  "--expt-relaxed-constexpr",
  "-Wno-deprecated-gpu-targets",
];

function cudaArchFlags(): string[] {
  const archs = (Deno.env.get("LTE_CUDA_ARCH") ?? "90").split(/[;, ]+/).filter(Boolean);
  return archs.flatMap((a) => ["-gencode", `arch=compute_${a},code=[sm_${a},compute_${a}]`]);
}

/** Finds nvcc, or returns undefined. */
export function findNvcc(): string | undefined {
  const candidates = [
    Deno.env.get("NVCC"),
    "nvcc",
    Deno.env.get("CUDA_HOME") && join(Deno.env.get("CUDA_HOME")!, "bin/nvcc"),
    "/usr/local/cuda/bin/nvcc",
  ].filter((c): c is string => !!c);
  for (const c of candidates) {
    try {
      const r = new Deno.Command(c, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
      if (r.success) return c;
    } catch { /* not found */ }
  }
  return undefined;
}

interface Job {
  cmd: string;
  args: string[];
  label: string;
  /** Runs after the command succeeded (e.g. renaming a temporary output into place). */
  then?: () => void;
}

async function runJob(job: Job): Promise<void> {
  const out = await new Deno.Command(job.cmd, { args: job.args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`build failed: ${job.label}\n$ ${job.cmd} ${job.args.join(" ")}\n${text}`);
  }
  if (text.trim()) console.error(text.trim());
  job.then?.();
}

/** Runs jobs with up to `parallel` at a time; throws the first failure after all have finished. */
async function runAll(jobs: Job[], parallel: number): Promise<void> {
  const queue = [...jobs];
  const errors: unknown[] = [];
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, async () => {
    while (queue.length > 0) {
      const job = queue.shift()!;
      try {
        await runJob(job);
      } catch (e) {
        errors.push(e);
      }
    }
  }));
  if (errors.length > 0) throw errors[0];
}

function hashOf(parts: (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p), h.update("\0");
  return h.digest("hex").slice(0, 16);
}

/** Builds one backend; returns the library path. Skips work when nothing changed. */
export async function buildBackend(kind: BackendKind, opts: { force?: boolean; nvcc?: string } = {}): Promise<string> {
  const objDir = join(BUILD_DIR, "obj", kind);
  mkdirSync(objDir, { recursive: true });
  const lib = join(BUILD_DIR, libraryFileName(kind));
  const buildId = sourceHash(kind);
  const compiler = kind === "cpu" ? (Deno.env.get("CC") ?? "gcc") : opts.nvcc!;
  const flags = kind === "cpu" ? CPU_FLAGS : [...CUDA_FLAGS, ...cudaArchFlags()];
  // The stamp records the sources AND the toolchain: another LTE_CUDA_ARCH, compiler or flag set
  // must rebuild even when no source changed.
  const stampText = `${buildId} ${hashOf([compiler, flags.join(" ")])}`;
  const stamp = `${lib}.buildid`;
  if (!opts.force && existsSync(lib) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === stampText) {
    console.error(`build: ${libraryFileName(kind)} is up to date (${buildId})`);
    return lib;
  }
  const headers = allInputs(kind).filter((f) => /\.(h|cuh)$/.test(f)).map((f) => readFileSync(f));
  const include = ["-I", join(CUDA_DIR, "include"), "-I", join(CUDA_DIR, kind)];
  const objects: string[] = [];
  const jobs: Job[] = [];
  for (const src of compiledSources(kind)) {
    // The build id is deliberately not part of the object key: only the generated unit below uses it.
    const key = hashOf([compiler, flags.join(" "), readFileSync(src), ...headers]);
    const obj = join(objDir, `${basename(src)}.${key}.o`);
    objects.push(obj);
    if (!opts.force && existsSync(obj)) continue;
    const tmp = `${obj}.tmp${Deno.pid}`;
    jobs.push({
      cmd: compiler,
      args: [...flags, ...include, "-c", src, "-o", tmp],
      label: basename(src),
      then: () => renameSync(tmp, obj),
    });
  }
  const started = performance.now();
  await runAll(jobs, navigator.hardwareConcurrency ?? 2);
  // The build id is compiled into a tiny generated unit so that changing it relinks without
  // recompiling every kernel.
  const idSrc = join(objDir, `build_id_${buildId}.c`);
  writeFileSync(idSrc, `const char *lte_internal_build_id = "${buildId}";\n`);
  const idObj = `${idSrc}.o`;
  await runAll([{ cmd: Deno.env.get("CC") ?? "gcc", args: ["-fPIC", "-c", idSrc, "-o", idObj], label: "build id" }], 1);
  const tmpLib = `${lib}.tmp${Deno.pid}`;
  const linkArgs = kind === "cpu"
    ? ["-shared", "-fopenmp", "-o", tmpLib, ...objects, idObj, "-lm"]
    : ["-shared", ...cudaArchFlags(), "-o", tmpLib, ...objects, idObj, "-ldl", "-lpthread"];
  await runJob({ cmd: compiler, args: linkArgs, label: `link ${libraryFileName(kind)}` });
  renameSync(tmpLib, lib);
  writeFileSync(`${stamp}.tmp`, stampText + "\n");
  renameSync(`${stamp}.tmp`, stamp);
  console.error(
    `build: ${libraryFileName(kind)} built (${buildId}, ${jobs.length} of ${objects.length} units compiled, ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s)`,
  );
  return lib;
}

if (import.meta.main) {
  const args = Deno.args;
  const force = args.includes("--force");
  const requireCuda = args.includes("--require-cuda");
  const bi = args.indexOf("--backend");
  const which = bi >= 0 ? args[bi + 1] : "all";
  if (!["cpu", "cuda", "all"].includes(which ?? "")) {
    console.error(`build: --backend must be cpu, cuda or all, got ${which}`);
    Deno.exit(2);
  }
  try {
    if (which === "cpu" || which === "all") await buildBackend("cpu", { force });
    if (which === "cuda" || which === "all") {
      const nvcc = findNvcc();
      if (!nvcc) {
        const msg = "build: nvcc not found (set NVCC or CUDA_HOME); skipping the CUDA backend";
        if (requireCuda || which === "cuda") throw new Error(msg);
        console.error(msg);
      } else {
        await buildBackend("cuda", { force, nvcc });
      }
    }
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    Deno.exit(1);
  }
}

/**
 * Progress reporting for long stage loops: a single redrawn line on a terminal, plain lines at most
 * every few seconds otherwise (CI logs, files), with a moving-average rate and ETA.
 *
 * @module
 */
import { stderrIsTerminal, writeStderr } from "./_io.ts";

/** Options of {@linkcode createProgress} that a stage passes through `ctx.progress()`. */
export interface ProgressOptions {
  /** Number of steps at completion. */
  total: number;
  /** Shown first on the line, e.g. `"train"`. */
  label: string;
  /** What a step is, for the rate (`"step"` gives `3.1 step/s`). @default {"it"} */
  unit?: string;
}

/** Extra fields shown after the counter, e.g. `{ loss: 3.21, "tok/s": 5200 }`. */
export type ProgressFields = Record<string, number | string>;

/** A live progress report. */
export interface Progress {
  /** Report that `step` of `total` steps are done, with optional fields to show. */
  update(step: number, fields?: ProgressFields): void;
  /** Finish: print the final line (once), and end the terminal line. */
  done(fields?: ProgressFields): void;
}

/** Where and how {@linkcode createProgress} prints; defaults suit real use, tests replace them. */
export interface ProgressSinkOptions {
  /** Writes raw text (no newline added). @default {stderr} */
  write?: (text: string) => void;
  /** Redraw one line in place. @default {Deno.stderr.isTerminal()} */
  isTerminal?: boolean;
  /** Milliseconds clock. @default {Date.now} */
  now?: () => number;
  /** Minimum time between plain (non-terminal) lines, in ms. @default {5000} */
  plainIntervalMs?: number;
  /** Called with each plain line and the final line (the runner sends these to log.txt). */
  onLine?: (line: string) => void;
  /** Bar width in characters. @default {20} */
  width?: number;
}

const TTY_INTERVAL_MS = 100;
const WINDOW = 20; // samples in the moving average of the step rate

/**
 * Create a progress report.
 *
 * @example
 * ```ts
 * const bar = createProgress({ total: 500, label: "train", unit: "step" });
 * for (let s = 1; s <= 500; s++) bar.update(s, { loss: 3.21 });
 * bar.done();
 * // terminal: train [####................] 120/500 24% loss 3.21 2.1 step/s ETA 3m01s
 * ```
 */
export function createProgress(opts: ProgressOptions, sink: ProgressSinkOptions = {}): Progress {
  const write = sink.write ?? writeStderr;
  const tty = sink.isTerminal ?? stderrIsTerminal();
  const now = sink.now ?? Date.now;
  const interval = tty ? TTY_INTERVAL_MS : sink.plainIntervalMs ?? 5000;
  const created = now();
  // (time, step) of the latest updates. They start at the first update(), not at [created, 0]: a
  // resumed stage's first update is at step k, and k steps "since creation" would be a wild rate.
  const samples: [number, number][] = [];
  let lastPrint = -Infinity;
  let step = 0;
  let fields: ProgressFields = {};
  let finished = false;

  const render = () => {
    const t = now();
    // With a single sample, estimate from creation, counting one step (the first update's).
    const [t0, s0] = samples.length >= 2 ? samples[0]! : [created, Math.max(0, (samples[0]?.[1] ?? 0) - 1)];
    const rate = t > t0 && step > s0 ? ((step - s0) / (t - t0)) * 1000 : 0;
    return formatProgressLine({ ...opts, step, fields, rate, width: sink.width ?? 20 });
  };
  const print = (final: boolean) => {
    const line = render();
    if (tty) write(`\r${line}\x1b[K${final ? "\n" : ""}`);
    else write(line + "\n");
    if (final || !tty) sink.onLine?.(line);
    lastPrint = now();
  };

  return {
    update(s, f) {
      if (finished) return;
      step = s;
      if (f) fields = { ...fields, ...f };
      samples.push([now(), s]);
      if (samples.length > WINDOW) samples.shift();
      if (now() - lastPrint >= interval) print(false);
    },
    done(f) {
      if (finished) return;
      if (f) fields = { ...fields, ...f };
      finished = true;
      print(true);
    },
  };
}

/** Everything one progress line shows. */
export interface ProgressLine {
  label: string;
  step: number;
  total: number;
  unit?: string;
  fields: ProgressFields;
  /** Steps per second (moving average); 0 when unknown. */
  rate: number;
  /** Bar width in characters. @default {20} */
  width?: number;
}

/**
 * Format one line: `label [#####...............] 120/500 24% loss 3.21 tok/s 5.2k 2.1 it/s ETA 3m01s`.
 */
export function formatProgressLine(p: ProgressLine): string {
  const width = p.width ?? 20;
  const frac = p.total > 0 ? Math.min(1, Math.max(0, p.step / p.total)) : 0;
  const filled = Math.round(frac * width);
  const parts = [
    p.label,
    `[${"#".repeat(filled)}${".".repeat(width - filled)}]`,
    `${p.step}/${p.total}`,
    `${Math.floor(frac * 100)}%`,
  ];
  for (const [k, v] of Object.entries(p.fields)) parts.push(`${k} ${typeof v === "number" ? formatNumber(v) : v}`);
  if (p.rate > 0) {
    parts.push(`${formatNumber(p.rate)} ${p.unit ?? "it"}/s`);
    if (p.step < p.total) parts.push(`ETA ${formatDuration((p.total - p.step) / p.rate)}`);
  }
  return parts.join(" ");
}

/** 3 significant digits, with k/M/G suffixes from 1,000 up: 3.21, 0.0123, 512, 5.2k, 12.3k, 1.3M. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  const sig = (x: number) => String(Number(x.toPrecision(3)));
  if (a >= 1e9) return `${sig(v / 1e9)}G`;
  if (a >= 1e6) return `${sig(v / 1e6)}M`;
  if (a >= 1e3) return `${sig(v / 1e3)}k`;
  if (Number.isInteger(v)) return String(v);
  return sig(v);
}

/** Seconds as `42s`, `1m12s`, `2h05m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

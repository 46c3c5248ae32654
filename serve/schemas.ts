/**
 * zod schemas of the request bodies of `/v1/completions` and `/v1/chat/completions`.
 *
 * OpenAI's field names and ranges; `top_k`, `seed` and `ignore_eos` are accepted as extras (vLLM
 * takes them via `extra_body`). Unknown keys are ignored (clients send fields such as `user`), but a known feature
 * that this server does not implement (`n` > 1, `logprobs`, tools, penalties other than 0, ...) is
 * refused with a message naming the field rather than silently ignored.
 *
 * @module
 */
import { z } from "zod";

const Stop = z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish();
const StreamOptions = z.object({ include_usage: z.boolean().nullish() }).nullish();

/** Keys shared by both endpoints. */
const Common = {
  model: z.string().nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  max_completion_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(0).nullish(),
  seed: z.number().int().nullish(),
  /** Keep generating past the end-of-sequence token (fixed-length load tests, as vLLM/llama.cpp). */
  ignore_eos: z.boolean().nullish(),
  n: z.literal(1, { message: "only n = 1 is supported" }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
  stop: Stop,
  presence_penalty: z.literal(0, { message: "presence_penalty is not supported (only 0)" }).nullish(),
  frequency_penalty: z.literal(0, { message: "frequency_penalty is not supported (only 0)" }).nullish(),
  logprobs: z.union([z.literal(false), z.null()], { message: "logprobs is not supported" }).optional(),
  top_logprobs: z.null({ message: "top_logprobs is not supported" }).optional(),
  user: z.string().nullish(),
};

/** POST /v1/completions. */
export const CompletionRequest = z.object({
  ...Common,
  prompt: z.union([
    z.string(),
    z.array(z.string()).length(1, {
      message: "a list of prompts must hold exactly one prompt (n batching is not supported)",
    }),
    z.array(z.number().int().min(0)).min(1),
  ], { message: "prompt must be a string, a list of one string, or a non-empty list of token ids" }),
  echo: z.literal(false, { message: "echo is not supported" }).nullish(),
  suffix: z.null({ message: "suffix is not supported" }).optional(),
  logprobs: z.null({ message: "logprobs is not supported" }).optional(),
  best_of: z.literal(1, { message: "best_of is not supported (only 1)" }).nullish(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** Message content: a string, or OpenAI's list of parts of which only text parts are supported. */
const Content = z.union([
  z.string(),
  z.array(
    z.object({ type: z.literal("text", { message: "only text content parts are supported" }), text: z.string() }),
  ),
]);

export const ChatMessage = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: Content.nullable(),
  name: z.string().optional(),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

/** POST /v1/chat/completions. */
export const ChatRequest = z.object({
  ...Common,
  messages: z.array(ChatMessage).min(1, { message: "messages must hold at least one message" }),
  tools: z.array(z.unknown()).max(0, { message: "tools are not supported" }).nullish(),
  tool_choice: z.literal("none", { message: "tool_choice is not supported" }).nullish(),
  response_format: z.object({ type: z.literal("text", { message: "only response_format text is supported" }) })
    .nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

/** The text of a message's content. */
export function contentText(c: ChatMessage["content"]): string {
  if (c === null) return "";
  return typeof c === "string" ? c : c.map((p) => p.text).join("");
}

/** zod issues as one line: `path: message; path: message`. */
export function formatZodError(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`).join("; ");
}

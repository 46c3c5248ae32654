/**
 * The chat page in headless Chromium (Debian `chromium`, driven with puppeteer-core over the
 * DevTools protocol): load `/`, send a message, and see streamed tokens and the per-token sparsity
 * heat strip (one cell per layer) appear, with tokens/s in the header. The server runs the real
 * CPU engine on a tiny LTE model. CI installs chromium (.ci/run); elsewhere the test is skipped
 * when no browser is installed.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import puppeteer from "puppeteer-core";
import { startServing } from "../serve/app.ts";
import { makeTinyModel } from "./_serve_fixture.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

Deno.test({
  name: "chat page: streams tokens and draws the experts-per-layer strip in Chromium",
  ignore: !existsSync(CHROMIUM) && !Deno.env.get("CI"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = mkdtempSync(join(tmpdir(), "lte-page-"));
    const s = startServing({
      modelDir: makeTinyModel(join(dir, "m"), { sparse: true, seed: 3, maxSeq: 256 }),
      host: "127.0.0.1",
      port: 0,
      device: "cpu",
      dtype: "f32",
      sparse: "auto",
      maxBatch: 2,
      maxContext: null,
      maxQueue: 8,
      maxBodyBytes: 1 << 16,
      defaultMaxTokens: 16,
      shutdownGraceS: 2,
    }, { log: () => {} });
    await s.ready;
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      page.on("request", (r) => requests.push(r.url()));
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`${s.url}/`);
      await page.waitForSelector("body[data-ready='1']", { timeout: 30_000 });
      assert.match(await page.$eval("#model", (e) => e.textContent ?? ""), /LTE sparse/);
      await page.type("#input", "Hello, whale");
      await page.click("#send");
      await page.waitForSelector(".msg.assistant[data-done='1']", { timeout: 60_000 });
      const result = await page.evaluate(() => {
        // Runs in the page; typed loosely so this file needs no DOM library.
        const document = (globalThis as any).document;
        const box = document.querySelector(".msg.assistant")!;
        return {
          tokens: box.querySelectorAll(".tok").length,
          text: box.querySelector(".text")!.textContent,
          columns: box.querySelectorAll(".strip .col").length,
          cellsPerColumn: [...box.querySelectorAll(".strip .col")].map((c: any) => c.querySelectorAll(".cell").length),
          title: box.querySelector(".strip .cell")?.getAttribute("title") ?? "",
          tps: document.getElementById("tps")!.textContent,
          sparsity: document.getElementById("sparsity")!.textContent,
          user: document.querySelector(".msg.user")!.textContent,
        };
      });
      assert.equal(result.user, "Hello, whale");
      assert.ok(result.columns >= 1, JSON.stringify(result));
      assert.ok(result.cellsPerColumn.every((n: number) => n === 2), "one cell per layer");
      assert.match(result.title, /^token 1, layer 0: \d+\/8 experts$/);
      assert.ok(result.tokens >= 1 || result.columns === 1, "streamed text pieces");
      assert.match(result.tps ?? "", /tokens\/s: [\d.]+/);
      assert.match(result.sparsity ?? "", /FFN sparsity: [\d.]+%/);
      assert.deepEqual(errors, []);
      assert.ok(requests.every((u) => u.startsWith(s.url)), `only the server is contacted: ${requests.join(", ")}`);
    } finally {
      await browser.close();
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

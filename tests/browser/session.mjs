// Drive the eoagent page in headless Chromium: for each step attach files and/or send a
// message, wait for the expected text in the chat, then for an overlay image; take a
// screenshot; optionally reload and check the conversation is still there.
//
//   node session.mjs '{"url": "...", "steps": [...], "screenshot": "out.png", "reload": true}'
//
// A step: {"files": [path, ...], "text": "...", "expect": "text in the chat", "click": "button text"}.
// Prints one JSON line: {"ok": true, "timings": {...}, "chat": "..."} (exit 1 on failure).
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2]);
const timeout = options.timeout_ms ?? 60000;
const timings = {};
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath: options.chromium ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});

async function chatText(page) {
  return (await page.locator("#eo-chat").innerText()).replace(/\s+/g, " ");
}

async function waitForChat(page, expected) {
  await page.waitForFunction(
    (text) => {
      const chat = document.querySelector("#eo-chat");
      return chat && chat.innerText.replace(/\s+/g, " ").includes(text);
    },
    expected,
    { timeout },
  );
}

let result;
try {
  const page = await browser.newPage({ viewport: options.viewport ?? { width: 1440, height: 1000 } });
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  let t0 = Date.now();
  await page.goto(options.url, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#eo-input textarea", { timeout });
  // The session line is filled by the load event: the page is live.
  await page.waitForFunction(
    () => (document.querySelector("#eo-session")?.innerText ?? "").includes("Session"),
    null,
    { timeout },
  );
  timings.page_ready_s = (Date.now() - t0) / 1000;

  for (const [i, step] of (options.steps ?? []).entries()) {
    t0 = Date.now();
    if (step.click) {
      await page.getByRole("button", { name: step.click }).click();
    }
    if (step.files?.length) {
      await page.setInputFiles("#eo-input input[type=file]", step.files);
      // An attached file shows as a thumbnail/chip in the box once uploaded.
      await page.waitForFunction(
        (n) => document.querySelectorAll("#eo-input .thumbnail-item, #eo-input .thumbnail-image, #eo-input [class*=thumbnail]").length >= n,
        step.files.length,
        { timeout },
      );
    }
    if (step.text !== undefined || step.files?.length) {
      await page.locator("#eo-input textarea").fill(step.text ?? "");
      await page.locator("#eo-input textarea").press("Enter");
    }
    if (step.expect) await waitForChat(page, step.expect);
    timings[`step_${i}_s`] = (Date.now() - t0) / 1000;
  }

  if (options.overlay !== false) {
    await page.waitForSelector("#eo-map img[src]", { timeout });
    await page.waitForSelector("#eo-chat img[src*='.png']", { timeout });
  }
  // Let images finish decoding before the picture is taken.
  await page.waitForFunction(
    () => [...document.images].every((img) => img.complete),
    null,
    { timeout },
  );
  if (options.open_tools) {
    // Open the first tool step so the screenshot shows its arguments and result.
    const titles = page.locator("#eo-chat button:has-text('✅')");
    if ((await titles.count()) > 0) await titles.first().click();
  }
  if (options.screenshot) {
    await page.screenshot({ path: options.screenshot, fullPage: options.full_page ?? false });
  }
  const before = await chatText(page);

  let afterReload = null;
  if (options.reload) {
    t0 = Date.now();
    await page.reload({ waitUntil: "domcontentloaded" });
    await waitForChat(page, options.reload_expect ?? options.steps.at(-1).expect);
    timings.reload_s = (Date.now() - t0) / 1000;
    afterReload = await chatText(page);
  }
  result = { ok: true, timings, chat: before, after_reload: afterReload, console_errors: consoleErrors };
} catch (error) {
  result = { ok: false, error: String(error), timings, console_errors: consoleErrors };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

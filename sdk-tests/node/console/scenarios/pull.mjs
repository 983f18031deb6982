// Models page: pull whisper-tiny-en (progress bar, then success and a refreshed list), then use
// it in the playground to transcribe the fake microphone's recording.

import { recordAndTranscribe } from "./speech_common.mjs";

const NAME = "whisper-tiny-en";

export default async function (page, ctx) {
  await ctx.open("models");
  const before = await ctx.curl("GET", "/kiln/models");
  ctx.expect(!before.result.models.some((m) => m.name === NAME), `${NAME} is not installed yet`);
  const button = `[data-test=pull-${NAME}-button]`;
  await page.waitForSelector(button);
  await page.click(button);
  const row = `[data-test=pull-${NAME}]`;
  await page.waitForSelector(`${row} progress`);
  if ((await page.getAttribute(row, "data-state")) === "pulling") await ctx.screenshot("models-pulling");
  await page.waitForSelector(`${row}[data-state=success], ${row}[data-state=error]`, { timeout: 240000 });
  ctx.expect((await page.getAttribute(row, "data-state")) === "success", `the pull failed: ${await page.textContent(row)}`);
  // The list was refreshed: the model is installed and the Pull button gone.
  await page.waitForSelector(`[data-test=installed] code:text-is("${NAME}")`);
  ctx.expect(!(await page.$(button)), "no Pull button for an installed model");
  const after = await ctx.curl("GET", "/kiln/models");
  ctx.expect(after.result.models.some((m) => m.name === NAME), `GET /kiln/models lists ${NAME}`);
  await ctx.screenshot("models");

  await ctx.open("playground?tab=speech");
  await page.selectOption("[data-test=speech-model]", NAME);
  await recordAndTranscribe(page, ctx);
  const loaded = await ctx.curl("GET", "/kiln/models");
  ctx.expect(loaded.result.models.find((m) => m.name === NAME).loaded, `${NAME} answered, so it is loaded`);
}

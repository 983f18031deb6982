// Speech to text in the playground: ~3.5 s from the (fake) microphone, encoded as WAV in the
// page, transcribed by Whisper, with word timings.

import { recordAndTranscribe } from "./speech_common.mjs";

export default async function (page, ctx) {
  await ctx.open("playground?tab=speech");
  const model = await page.$("[data-test=speech-model] option[value='whisper-base']");
  if (model) await page.selectOption("[data-test=speech-model]", "whisper-base");
  await recordAndTranscribe(page, ctx);
  await ctx.screenshot("playground-speech");
}

// Records from the fake microphone (KILN_FAKE_AUDIO) in the speech tab and checks the transcript
// for KILN_FAKE_AUDIO_WORDS (comma-separated, any case; one in four may be misheard).

export async function recordAndTranscribe(page, ctx, seconds = 3.5) {
  const expected = (process.env.KILN_FAKE_AUDIO_WORDS || "").split(",").map((w) => w.trim().toLowerCase()).filter(Boolean);
  ctx.expect(process.env.KILN_FAKE_AUDIO, "KILN_FAKE_AUDIO names the WAV the fake microphone plays");
  ctx.expect(expected.length, "KILN_FAKE_AUDIO_WORDS names words the recording holds");
  await page.click("[data-test=speech-record]");
  await page.waitForSelector("[data-test=speech-stop]:not([disabled])");
  await page.waitForTimeout(seconds * 1000);
  await page.click("[data-test=speech-stop]");
  await page.waitForSelector("[data-test=speech-result][data-state=done], [data-test=speech-result][data-state=error]", { timeout: 180000 });
  const result = await page.textContent("[data-test=speech-result]");
  ctx.expect(await page.$("[data-test=speech-result][data-state=done]"), `transcription failed: ${result}`);
  const transcript = (await page.textContent("[data-test=speech-transcript]")).toLowerCase();
  ctx.log(`transcript: ${transcript}`);
  // Whisper may mishear one word of a browser recording ("quit brown fox"), not more.
  const missing = expected.filter((word) => !transcript.includes(word));
  ctx.expect(missing.length <= Math.floor(expected.length / 4), `the transcript lacks ${missing.join(", ")}: ${transcript}`);
  const words = await page.$$("[data-test=speech-words] .word");
  ctx.expect(words.length >= expected.length, `word timings shown (${words.length})`);
  const recorded = await page.textContent("[data-test=speech-audio] >> xpath=..");
  ctx.expect(/Recorded \d/.test(recorded), `the recording is described: ${recorded}`);
  return transcript;
}

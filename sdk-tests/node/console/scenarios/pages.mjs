// Screenshots of the remaining playground tabs and the API page, each doing its work first.

export default async function (page, ctx) {
  // Embeddings: four sentences, the cosine similarity grid.
  await ctx.open("playground?tab=embeddings");
  await page.click("[data-test=embeddings-run]");
  await page.waitForSelector("[data-test=embeddings-grid]", { timeout: 120000 });
  const cells = await page.$$("[data-test=embeddings-grid] .cell");
  ctx.expect(cells.length === 16, `a 4×4 grid (${cells.length} cells)`);
  ctx.expect((await cells[0].textContent()) === "1.000", "a text is its own nearest");
  await ctx.screenshot("playground-embeddings");

  // Text to speech: an audio player with the spoken text.
  await ctx.open("playground?tab=tts");
  await page.click("[data-test=tts-run]");
  await page.waitForSelector("[data-test=tts-audio], [data-test=tts-result] .error", { timeout: 120000 });
  ctx.expect(await page.$("[data-test=tts-audio]"), `speech made: ${await page.textContent("[data-test=tts-result]")}`);
  const duration = await page.$eval("[data-test=tts-audio]", (audio) => new Promise((resolve) => {
    if (audio.readyState >= 1) resolve(audio.duration);
    else audio.addEventListener("loadedmetadata", () => resolve(audio.duration), { once: true });
    setTimeout(() => resolve(audio.duration), 10000);
  }));
  ctx.expect(duration > 1, `the audio plays for ${duration} s`);
  await ctx.screenshot("playground-tts");

  // Image classification: a picture drawn in the page, uploaded.
  await ctx.open("playground?tab=image");
  const png = await page.evaluate(() => {
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext("2d");
    const sky = g.createLinearGradient(0, 0, 0, 240);
    sky.addColorStop(0, "#7fb8ff");
    sky.addColorStop(1, "#e8f3ff");
    g.fillStyle = sky;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = "#3f8f3a";
    g.fillRect(0, 180, 320, 60);
    g.fillStyle = "#f28c28";
    g.beginPath();
    g.arc(160, 120, 70, 0, Math.PI * 2);
    g.fill();
    g.fillStyle = "#4d7a2a";
    g.fillRect(155, 40, 10, 20);
    return canvas.toDataURL("image/png").split(",")[1];
  });
  await page.setInputFiles("[data-test=image-file]", { name: "orange.png", mimeType: "image/png", buffer: Buffer.from(png, "base64") });
  await page.waitForSelector("[data-test=image-result][data-state=done], [data-test=image-result][data-state=error]", { timeout: 120000 });
  const labels = await page.$$("[data-test=image-labels] .bar");
  ctx.expect(labels.length > 0, `labels shown: ${await page.textContent("[data-test=image-result]")}`);
  await ctx.screenshot("playground-image");

  // API reference: operations grouped by tag, filtered to the model routes, one opened.
  await ctx.open("api");
  const operations = await page.$$("[data-test=operation]");
  if (operations.length) {
    ctx.log(`api page: ${operations.length} operations`);
    await page.fill("[data-test=api-filter]", "/models");
    const shown = page.locator("[data-test=operation]:visible");
    ctx.expect(await shown.count() > 0 && await shown.count() < operations.length, "the filter narrows the list");
    await shown.first().locator(":scope > summary").click();
  } else {
    ctx.log(`api page shows no operations: ${await page.textContent("main")}`);
  }
  await ctx.screenshot("api");
}

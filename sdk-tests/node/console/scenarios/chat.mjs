// Chat in the playground: the answer streams in token by token (the page shows it growing
// over several distinct lengths before it is done).

export default async function (page, ctx) {
  await ctx.open("playground");
  await page.waitForSelector("[data-test=chat-input]");
  // Every length the newest answer's text takes, as the page changes it.
  await page.evaluate(() => {
    window.__answerLengths = [];
    const log = document.querySelector("[data-test=chat-log]");
    new MutationObserver(() => {
      const answers = log.querySelectorAll("[data-test=chat-answer] .text");
      const last = answers[answers.length - 1];
      if (last) window.__answerLengths.push(last.textContent.length);
    }).observe(log, { childList: true, subtree: true, characterData: true });
  });
  await page.fill("[data-test=chat-input]", "Write three short sentences about the sea.");
  await page.click("[data-test=chat-send]");
  const answer = page.locator("[data-test=chat-answer]").last();
  await page.waitForFunction(() => {
    const answers = document.querySelectorAll("[data-test=chat-answer]");
    const last = answers[answers.length - 1];
    return last && last.dataset.state !== "streaming";
  }, null, { timeout: 180000 });
  const state = await answer.getAttribute("data-state");
  const text = (await answer.locator(".text").textContent()) || "";
  const lengths = await page.evaluate(() => window.__answerLengths);
  const distinct = [...new Set(lengths.filter((n) => n > 0))];
  ctx.log(`answer (${state}, ${distinct.length} distinct lengths): ${text}`);
  ctx.expect(state === "done", `the answer ended in state ${state}: ${await page.textContent("main")}`);
  ctx.expect(text.trim().length > 0, "the answer is empty");
  ctx.expect(distinct.length >= 3, `the answer grew over only ${distinct.length} lengths: ${lengths}`);
  ctx.expect(distinct[distinct.length - 1] === text.length, "the last observed length is the answer's");
  ctx.expect(await page.isEnabled("[data-test=chat-send]"), "Send is enabled again");
  ctx.expect(!(await page.isEnabled("[data-test=chat-stop]")), "Stop is disabled again");
  const usage = await page.textContent("[data-test=chat-usage]");
  ctx.expect(/completion tokens/.test(usage), `usage shown: ${usage}`);
  await ctx.screenshot("playground-chat");

  // Stop: a long answer, aborted once it has started; the page says so and is ready again.
  await page.click("[data-test=chat-clear]");
  await page.click("details.options > summary");
  await page.fill("[data-test=chat-max-tokens]", "1024");
  await page.fill("[data-test=chat-input]", "Count from one to three hundred in words, one number per line.");
  await page.click("[data-test=chat-send]");
  await page.waitForFunction(() => {
    const answer = document.querySelector("[data-test=chat-answer]");
    return answer && answer.querySelector(".text").textContent.length > 0;
  }, null, { timeout: 180000 });
  await page.click("[data-test=chat-stop]");
  await page.waitForSelector("[data-test=chat-answer]:not([data-state=streaming])");
  const stopped = await page.getAttribute("[data-test=chat-answer]", "data-state");
  ctx.expect(stopped === "stopped", `the answer was stopped (state ${stopped})`);
  ctx.expect(await page.isEnabled("[data-test=chat-send]"), "Send is enabled after Stop");
}

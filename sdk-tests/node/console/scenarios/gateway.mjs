// The AI Gateway page: a gateway made with curl, one request through it (curl too), then the
// page shows the request in its log, its bodies, feedback, and the analytics charts.

const MODEL = "@cf/meta/llama-3.1-8b-instruct";
const PROMPT = "Say hi";

export default async function (page, ctx) {
  const gateway = `console-gw-${Date.now().toString(36)}`;
  const gateways = `/client/v4/accounts/${ctx.account}/ai-gateway/gateways`;
  const created = await ctx.curl("POST", gateways, { id: gateway, collect_logs: true });
  ctx.expect(created.success && created.result.id === gateway, `gateway created: ${JSON.stringify(created)}`);

  const answer = await ctx.curl("POST", `/v1/${ctx.account}/${gateway}/workers-ai/${MODEL}`,
    { prompt: PROMPT, max_tokens: 8 });
  ctx.expect(answer.success && answer.result, `the request through the gateway answered: ${JSON.stringify(answer)}`);
  const listed = await ctx.curl("GET", `${gateways}/${gateway}/logs`);
  ctx.expect(listed.success && listed.result.length === 1, `one log: ${JSON.stringify(listed)}`);
  const logId = listed.result[0].id;

  // The gateway's page: the request in its log.
  await ctx.open(`gateway?gateway=${gateway}`);
  const row = page.locator("[data-test=gateway-log] [data-test=gateway-log-row]", { hasText: MODEL }).first();
  await row.waitFor({ timeout: 30000 });
  ctx.expect((await row.getAttribute("data-id")) === logId, "the row is the request's log");
  ctx.expect((await row.textContent()).includes(`workers-ai/${MODEL}`), "the row shows the request's path");

  // Charts: at least one point with data (the minute of the request).
  // (Analytics may trail the request by a moment: the page refreshes them every 10 s.)
  await page.waitForFunction(() => [...document.querySelectorAll(
    "[data-test=gateway-charts] svg .chart-series[data-series=requests] circle.chart-point")]
    .some((point) => Number(point.dataset.y) > 0), null, { timeout: 45000 });
  await ctx.screenshot("gateway");

  // The entry: request and response bodies, then feedback.
  await row.click();
  await page.waitForFunction((prompt) => {
    const request = document.querySelector("[data-test=gateway-request-body]");
    const response = document.querySelector("[data-test=gateway-response-body]");
    return request && request.textContent.includes(prompt) && response
      && response.textContent.includes("\"response\"");
  }, PROMPT);
  await page.click("[data-test=gateway-feedback-up]");
  await page.waitForFunction(() => document.querySelector("[data-test=gateway-feedback-state]")
    ?.textContent.includes("good"));
  const log = await ctx.curl("GET", `${gateways}/${gateway}/logs/${logId}`);
  ctx.expect(log.success && log.result.feedback === 1, `feedback stored: ${JSON.stringify(log.result)}`);
  await ctx.screenshot("gateway-log-entry");

  // Filters reach the route: a model no request used matches nothing.
  await page.fill("[data-test=gateway-log-model]", "@cf/none/such-model");
  await page.press("[data-test=gateway-log-model]", "Enter");
  await page.waitForFunction(() => !document.querySelector("[data-test=gateway-log-row]"));
  ctx.log(`gateway ${gateway}: log ${logId} shown, rated, filtered`);
}

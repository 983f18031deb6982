// The Vectorize page: an index made and filled with curl (embeddings of a few sentences, each
// with its text as metadata), then a text query typed into the page finds the right sentence.
// Also the usage page, after this traffic.

const EMBEDDING_MODEL = "@cf/baai/bge-small-en-v1.5";
const SENTENCES = [
  "The cat sleeps all afternoon on the warm windowsill.",
  "Stock markets fell sharply after the central bank raised interest rates.",
  "Mix two cups of flour with three eggs and a pinch of salt to make the dough.",
  "The spacecraft fired its engines and entered orbit around Mars.",
];
const QUERY = "How much flour and how many eggs does the dough need?";
const EXPECTED = 2;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export default async function (page, ctx) {
  const account = `/client/v4/accounts/${ctx.account}`;
  const index = `console-vz-${Date.now().toString(36)}`;
  const indexPath = `${account}/vectorize/v2/indexes/${index}`;
  const created = await ctx.curl("POST", `${account}/vectorize/v2/indexes`,
    { name: index, description: "sentences for the console test", config: { dimensions: 384, metric: "cosine" } });
  ctx.expect(created.success, `index created: ${JSON.stringify(created)}`);

  const embedded = await ctx.curl("POST", `${account}/ai/run/${EMBEDDING_MODEL}`, { text: SENTENCES });
  const data = embedded.result && embedded.result.data;
  ctx.expect(Array.isArray(data) && data.length === SENTENCES.length && data[0].length === 384,
    `384-d embeddings: ${JSON.stringify(embedded).slice(0, 300)}`);
  // NDJSON, one vector a line, as the REST API's insert takes it.
  const ndjson = SENTENCES.map((text, i) => JSON.stringify({ id: `s${i}`, values: data[i], metadata: { text } })).join("\n");
  const inserted = await ctx.curl("POST", `${indexPath}/insert`, ndjson);
  ctx.expect(inserted.success && inserted.result.mutationId, `inserted: ${JSON.stringify(inserted)}`);
  for (let tries = 0; ; tries += 1) {
    const info = await ctx.curl("GET", `${indexPath}/info`);
    if (info.result && info.result.processedUpToMutation === inserted.result.mutationId) {
      ctx.expect(info.result.vectorCount === SENTENCES.length, `vector count: ${JSON.stringify(info.result)}`);
      break;
    }
    ctx.expect(tries < 300, `the insert was applied: ${JSON.stringify(info)}`);
    await sleep(100);
  }

  // The index's page: info, then a text query embedded in the page.
  await ctx.open(`vectorize?index=${index}`);
  await page.waitForFunction((count) => document.querySelector("[data-test=vector-info]")
    ?.textContent.includes(`${count}vectors`), SENTENCES.length);
  await page.fill("[data-test=vector-query-input]", QUERY);
  await page.click("[data-test=vector-query-run]");
  await page.waitForSelector("[data-test=vector-matches] tbody tr, main#page .error", { timeout: 120000 });
  const error = await page.$("main#page .error");
  ctx.expect(!error, `the query ran: ${error ? await error.textContent() : ""}`);
  const ids = await page.$$eval("[data-test=vector-match-id]", (cells) => cells.map((cell) => cell.textContent));
  ctx.expect(ids[0] === `s${EXPECTED}`, `the flour sentence ranks first: ${ids.join(", ")}`);
  const metadata = await page.textContent("[data-test=vector-matches] tbody tr >> nth=0");
  ctx.expect(metadata.includes(SENTENCES[EXPECTED]), `its metadata holds the sentence: ${metadata}`);
  ctx.log(`vectorize: ${await page.textContent("[data-test=vector-query-used]")}; matches ${ids.join(", ")}`);
  await ctx.screenshot("vectorize");

  // Usage after this traffic: today's neurons and the per-day chart.
  await ctx.open("usage");
  await page.waitForSelector("[data-test=usage-today]");
  await page.waitForSelector("[data-test=tokens-table] table, [data-test=tokens-table] p");
  const today = await page.textContent("[data-test=usage-today]");
  ctx.expect(/neurons today/.test(today), `today's neurons shown: ${today}`);
  await ctx.screenshot("usage");
}

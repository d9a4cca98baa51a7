// The web console in a real browser: Debian's Chromium, headless, driven by Playwright. Clicks
// through the overview, a topic and one of its messages, a group's lag and a pipeline's dead
// letters while data flows, on a desktop and on a phone-sized screen, and keeps a screenshot
// of each page.
//
//   node console.mjs --admin 127.0.0.1:9644 --token TOKEN --topic clicks --group readers \
//        --pipeline validate --reason "no route" --shots DIR
//
// Exits non-zero with the failed checks listed; prints one line per check.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { parseArgs } from "node:util";

const { values: a } = parseArgs({
  options: {
    admin: { type: "string" }, token: { type: "string", default: "" },
    topic: { type: "string" }, group: { type: "string" }, pipeline: { type: "string" },
    reason: { type: "string" }, shots: { type: "string", default: "console-screenshots" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
mkdirSync(a.shots, { recursive: true });
const base = `http://${a.admin}/`;
const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

const browser = await chromium.launch({ executablePath: a.chromium, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", e => errors.push(e.message));
  const shot = name => page.screenshot({ path: `${a.shots}/${name}.png`, fullPage: true });

  // Without the token the page asks for it and shows no data.
  if (a.token) {
    await page.goto(base);
    await page.getByText("Token needed").waitFor({ timeout: 10000 });
    check(true, "without the token the console asks for it");
    await shot("00-token-needed");
    await page.fill("#token input[name=token]", a.token);
    await page.click("#token button");
  } else {
    await page.goto(base);
  }

  // Overview: the cards and the charts, which fill as the broker is sampled every 2 s.
  await page.locator("[data-testid=overview-cards]").waitFor({ timeout: 10000 });
  const topicsCard = await page.locator(".card", { hasText: "topics" }).locator(".n").innerText();
  check(Number(topicsCard) >= 2, `overview counts the topics (${topicsCard})`);
  await page.waitForFunction(() => {
    const c = document.querySelector('[data-chart="Records"] polyline');
    return c && c.getAttribute("points").split(" ").length >= 3;
  }, null, { timeout: 30000 });
  // The traffic produced nothing while its group joined and committed, just before the test
  // began: the newest step may still be that quiet one. The page redraws every 2 s, with a new
  // sample; within a few of them the steady flow must show.
  await page.waitForFunction(() => {
    const l = document.querySelector('[data-chart="Records"] .legend');
    return l && /produced [1-9]/.test(l.innerText);
  }, null, { timeout: 20000 }).catch(() => {});
  const legend = await page.locator('[data-chart="Records"] .legend').innerText();
  check(/produced [1-9]/.test(legend), `the records chart shows data flowing in (${legend.replace(/\s+/g, " ")})`);
  await shot("01-overview");

  // Topics, then the input topic, its partitions and its newest messages.
  await page.click("header nav a[data-nav=topics]");
  await page.locator("[data-testid=topics]").waitFor();
  await page.click(`[data-testid=topics] a:text-is("${a.topic}")`);
  await page.locator("[data-testid=partitions]").waitFor();
  const partitions = await page.locator("[data-testid=partitions] tbody tr").count();
  check(partitions >= 1, `the topic page lists its partitions (${partitions})`);
  // Partition 0 from the oldest record: a click, pretty-printed as JSON.
  await page.selectOption("form.browse select[name=from]", "beginning");
  await page.fill("form.browse input[name=max]", "5");
  await page.click("form.browse button");
  await page.waitForFunction(() => location.hash.includes("from=beginning"));
  // The page showed the newest messages before the click; the table is redrawn when the
  // fetch answers, so wait for the redraw rather than reading the old rows.
  await page.waitForFunction(() => document.querySelector("[data-testid=messages] tbody tr td")?.innerText.trim() === "0",
    null, { timeout: 10000 }).catch(() => {});
  const firstOffset = await page.locator("[data-testid=messages] tbody tr").first().locator("td").first().innerText();
  check(firstOffset.trim() === "0", `browsing from the oldest starts at offset 0 (${firstOffset})`);
  const rows = await page.locator("[data-testid=messages] tbody tr").count();
  check(rows === 5, `max=5 shows 5 messages (${rows})`);
  const json = await page.locator("[data-testid=messages] pre.json").nth(1).innerText();
  check(json.includes('\n  "ad"'), "a JSON value is pretty-printed");
  await shot("02-topic-messages");
  // By offset: the row asked for comes first.
  await page.selectOption("form.browse select[name=from]", "offset");
  await page.fill("form.browse input[name=at]", "3");
  await page.click("form.browse button");
  await page.waitForFunction(() => location.hash.includes("at=3"));
  await page.waitForFunction(() => document.querySelector("[data-testid=messages] tbody tr td")?.innerText.trim() === "3");
  check(true, "browsing from offset 3 starts there");

  // The group: committed offsets and lag per partition.
  await page.click("header nav a[data-nav=groups]");
  await page.locator(`[data-testid=groups] a:text-is("${a.group}")`).click();
  await page.locator("[data-testid=group-offsets]").waitFor();
  const lag = Number((await page.locator("[data-testid=group-lag]").innerText()).replace(/,/g, ""));
  check(lag > 0, `the group's lag shows (${lag} records behind)`);
  const lagRows = await page.locator("[data-testid=group-offsets] tbody tr").count();
  check(lagRows >= 1, `lag per partition (${lagRows} rows)`);
  await shot("03-group-lag");

  // The pipeline: status, tasks and the dead letters with their reasons.
  await page.click("header nav a[data-nav=pipelines]");
  await page.locator(`[data-testid=pipelines] a:text-is("${a.pipeline}")`).click();
  await page.locator("[data-testid=dead-letters]").waitFor();
  await page.waitForFunction(reason =>
    [...document.querySelectorAll("[data-testid=dead-letters] tbody td")].some(td => td.innerText.includes(reason)),
    a.reason, { timeout: 30000 });
  check(true, `the pipeline's dead letters show with their reason ("${a.reason}")`);
  const tasks = await page.locator("[data-testid=pipeline-tasks] tbody tr").count();
  check(tasks >= 1, `the pipeline's tasks are listed (${tasks})`);
  const status = await page.locator("h1 .tag").first().innerText();
  check(status === "running", `the pipeline is running (${status})`);
  await shot("04-pipeline-dead-letters");

  // A phone-sized screen: nothing wider than the screen but the tables' own scroll boxes.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [hash, name] of [["#/", "05-phone-overview"], [`#/topics/${a.topic}`, "06-phone-topic"], [`#/pipelines/${a.pipeline}`, "07-phone-pipeline"]]) {
    await page.goto(base + hash);
    await page.locator("main h1").waitFor();
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${hash} fits a 390 px screen (overflow ${overflow} px)`);
    await shot(name);
  }
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
} finally {
  await browser.close();
}
if (failures.length) {
  console.log(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("all checks passed");

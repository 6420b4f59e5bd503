// node:test reporter that counts results. It writes the counts as JSON to its
// destination; scripts/test.mjs adds up the groups and prints the one summary
// line the project's test command promises: "N passed, N failed[, N skipped]".
export default async function* summary(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    if (ev.data.details?.type === 'suite') {
      // A suite that failed outside its tests (e.g. a hook) counts once.
      if (ev.type === 'test:fail' && ev.data.details?.error?.failureType !== 'subtestsFailed')
        failed++;
      continue;
    }
    if (ev.type === 'test:fail') failed++;
    else if (ev.data.skip || ev.data.todo) skipped++;
    else passed++;
  }
  yield JSON.stringify({ passed, failed, skipped }) + '\n';
}

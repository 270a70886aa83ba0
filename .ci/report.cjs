// Reads a vitest JSON report. `count <file>` prints "passed failed total", where a file that failed
// outside its tests (a hook, the import) counts as one failure; `failures <file> <label>` prints
// each failure with the start of its message, so a CI log names it.
const path = require('path');
const [cmd, file, label = ''] = process.argv.slice(2);
let r;
try {
  r = require(path.resolve(file));
} catch {
  if (cmd === 'count') console.log('0 1 0');
  process.exit(0);
}
const head = (m) => String(m || '').split('\n').slice(0, 12).join('\n  ');
const broken = r.testResults.filter((f) => f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed'));
if (cmd === 'count') {
  console.log(`${r.numPassedTests} ${r.numFailedTests + broken.length} ${r.numTotalTests}`);
} else {
  for (const f of r.testResults) {
    const name = path.relative('.', f.name);
    for (const a of f.assertionResults.filter((x) => x.status === 'failed')) console.log(`FAILED [${label}] ${name} > ${a.fullName}\n  ${head((a.failureMessages || []).join('\n'))}`);
    if (broken.includes(f)) {
      const skipped = f.assertionResults.filter((a) => a.status !== 'passed').map((a) => a.fullName);
      const why = f.message ? head(f.message) : `the error is in the log above; not run because of it: ${skipped.join('; ') || 'every test of the file'}`;
      console.log(`FAILED [${label}] ${name} (outside its tests: a hook or the import)\n  ${why}`);
    }
  }
}

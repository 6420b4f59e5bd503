/**
 * Marks that tie what a test process creates to it, so the leak sweep
 * (leaks.ts) judges only its own leftovers on a machine shared with other
 * users and other test runs: the owner pid travels in the environment of
 * every process the test starts (sandboxes pass it on to their daemons, and
 * daemons to their VMMs), and network namespaces carry it in their name.
 */
export const TEST_OWNER = String(process.pid);
export const OWNER_TAG = process.pid.toString(36);

/** A network namespace name the leak sweep attributes to this test process: `bgt-<owner>-…`. */
export function testNetnsName(label: string, random: string): string {
  return `bgt-${OWNER_TAG}-${label}-${random}`;
}

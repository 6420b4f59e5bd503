import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import ts from 'typescript';

/**
 * The VMM driver seam holds: outside `src/vmm/<driver>/`, only the registry
 * imports a concrete driver (type-only imports and re-exports included), and
 * the VM lifecycle (src/vm) never names a driver. Checked on the TypeScript
 * sources, where type imports are still visible.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SRC = path.join(ROOT, 'src');
const VMM = path.join(SRC, 'vmm');
const REGISTRY = path.join(VMM, 'registry.ts');

const DRIVERS = fs
  .readdirSync(VMM, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) return sources(p);
    return d.name.endsWith('.ts') ? [p] : [];
  });
}

/** Every module specifier a file imports or re-exports, type-only ones included. */
function importsOf(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

/** The driver folder a specifier of `from` resolves into, if any. */
function driverOf(from: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const target = path.resolve(path.dirname(from), spec);
  const rel = path.relative(VMM, target);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return undefined;
  const first = rel.split(path.sep)[0]!;
  return DRIVERS.includes(first) ? first : undefined;
}

/** Files outside a driver folder (and not the registry) that import from one. */
function driverLeaks(files: { file: string; text: string }[]): string[] {
  const out: string[] = [];
  for (const { file, text } of files) {
    if (file === REGISTRY) continue;
    const own = DRIVERS.find((d) => file.startsWith(path.join(VMM, d) + path.sep));
    for (const spec of importsOf(text)) {
      const d = driverOf(file, spec);
      if (d && d !== own) out.push(`${path.relative(ROOT, file)} imports ${spec}`);
    }
  }
  return out;
}

/** String literals in a file that name a driver. */
function driverNames(file: string, text: string): string[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const visit = (n: ts.Node): void => {
    if (
      (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) &&
      !ts.isImportDeclaration(n.parent) &&
      !ts.isExportDeclaration(n.parent) &&
      DRIVERS.some((d) => n.text.toLowerCase().includes(d))
    )
      found.push(
        `${path.relative(ROOT, file)}:${sf.getLineAndCharacterOfPosition(n.pos).line + 1} ${n.getText()}`,
      );
    n.forEachChild(visit);
  };
  visit(sf);
  return found;
}

describe('the VMM driver boundary', () => {
  test('there are driver folders to guard', () => {
    assert.deepEqual(DRIVERS.sort(), ['firecracker', 'qemu']);
  });

  test('no file outside src/vmm/<driver>/ except the registry imports a concrete driver', () => {
    const files = sources(SRC).map((file) => ({ file, text: fs.readFileSync(file, 'utf8') }));
    assert.ok(files.length > 100);
    assert.deepEqual(driverLeaks(files), []);
  });

  test('the check catches a value import, a type import and a re-export', () => {
    const at = (rel: string): string => path.join(SRC, rel);
    const leaks = driverLeaks([
      { file: at('vm/boot.ts'), text: "import { kvmError } from '../vmm/qemu/driver.js';\n" },
      {
        file: at('doctor/checks.ts'),
        text: "import type { FirecrackerVersion } from '../vmm/firecracker/index.js';\n",
      },
      { file: at('vmm/driver.ts'), text: "export { FC_FILES } from './firecracker/driver.js';\n" },
      { file: at('vmm/qemu/driver.ts'), text: "import { buildQemuArgv } from './argv.js';\n" },
      {
        file: at('vmm/qemu/other.ts'),
        text: "import { connectVsock } from '../firecracker/vsock.js';\n",
      },
      { file: REGISTRY, text: "import { QemuDriver } from './qemu/driver.js';\n" },
    ]);
    assert.deepEqual(leaks, [
      'src/vm/boot.ts imports ../vmm/qemu/driver.js',
      'src/doctor/checks.ts imports ../vmm/firecracker/index.js',
      'src/vmm/driver.ts imports ./firecracker/driver.js',
      'src/vmm/qemu/other.ts imports ../firecracker/vsock.js',
    ]);
  });

  test('the VM lifecycle never names a driver (it asks capabilities)', () => {
    const named = sources(path.join(SRC, 'vm')).flatMap((f) =>
      driverNames(f, fs.readFileSync(f, 'utf8')),
    );
    assert.deepEqual(named, []);
    // and the check sees a name in code:
    assert.equal(
      driverNames(path.join(SRC, 'vm', 'x.ts'), "if (driver.name === 'firecracker') x();\n").length,
      1,
    );
  });
});

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

function codegen(op: string, name: string): { ok: boolean; output: string; generated?: string } {
  const dir = mkdtempSync(join(tmpdir(), 'codegen-'));
  writeFileSync(join(dir, `${name}.graphql`), op);
  const out = join(dir, 'generated.ts');
  try {
    const output = execFileSync('node', ['scripts/codegen.mjs'], {
      env: { ...process.env, CODEGEN_OPS_DIR: dir, CODEGEN_OUT: out },
      stdio: 'pipe',
      encoding: 'utf8',
    });
    return { ok: true, output, generated: readFileSync(out, 'utf8') };
  } catch (e) {
    return { ok: false, output: String((e as { stderr?: string }).stderr) };
  }
}

describe('the codegen', () => {
  it('types an operation that fits the schema', () => {
    const r = codegen('query Venues { venues { id name currency } }', 'Venues');
    expect(r.ok).toBe(true);
    expect(r.generated).toContain('export type VenuesResult = {\n  venues: Array<{\n    id: string;\n    name: string;\n    currency: string;\n  }>;\n};');
  });

  it('fails the build on a field the schema does not have', () => {
    const r = codegen('query Venues { venues { id colour } }', 'Venues');
    expect(r.ok).toBe(false);
    expect(r.output).toContain('Cannot query field "colour" on type "Venue"');
  });

  it('fails the build on a variable of the wrong type', () => {
    const r = codegen('mutation Stop($id: Int!) { stopSession(id: $id) { id } }', 'Stop');
    expect(r.ok).toBe(false);
    expect(r.output).toContain('Variable "$id" of type "Int!" used in position expecting type "UUID!"');
  });
});

// Validates an AsyncAPI document with @asyncapi/parser (the standard parser, spectral rules
// included): exits 1 on any diagnostic of severity error, prints warnings, and checks that
// the parsed channel addresses equal the `address:` lines found by the minimal line scan that
// crates/telematics-link/tests/asyncapi_topics.rs uses to compare the document with the code.
// The parser does not check AsyncAPI 3 message examples against their payload schema, so this
// script does (ajv; `format` is not asserted: `binary` is no JSON Schema format).
//
// Usage: node check.mjs DOC.yaml             validate, one-line summary
//        node check.mjs --channels DOC.yaml  validate, print the channel addresses as JSON
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';

const args = process.argv.slice(2);
const channelsMode = args[0] === '--channels';
const file = channelsMode ? args[1] : args[0];
if (!file) {
  console.error('usage: node check.mjs [--channels] DOC.yaml');
  process.exit(2);
}
const text = readFileSync(file, 'utf8');
const { document, diagnostics } = await new Parser().parse(text, { source: file });

const where = (d) => (d.range ? `${file}:${d.range.start.line + 1}` : file);
const path = (d) => (d.path && d.path.length ? ` (${d.path.join('.')})` : '');
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error || d.severity === DiagnosticSeverity.Warning) {
    const level = d.severity === DiagnosticSeverity.Error ? 'error' : 'warning';
    console.error(`${where(d)}: ${level} ${d.code}: ${d.message}${path(d)}`);
  }
}
if (errors.length > 0 || !document) {
  console.error(`${file}: INVALID (${errors.length} error(s))`);
  process.exit(1);
}

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
let examples = 0;
let badExamples = 0;
for (const message of document.messages().all()) {
  const payload = message.payload();
  if (!payload) continue;
  const validate = ajv.compile(payload.json());
  for (const example of message.examples().all()) {
    if (!example.hasPayload()) continue;
    examples += 1;
    if (!validate(example.payload())) {
      badExamples += 1;
      const why = validate.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
      console.error(`${file}: error example "${example.name()}" of message ${message.id()}: ${why}`);
    }
  }
}
if (badExamples > 0) {
  console.error(`${file}: INVALID (${badExamples} example(s) do not match their payload schema)`);
  process.exit(1);
}

// The same scan as the Rust test: every line whose first non-blank text is `address:`.
const scanned = text
  .split('\n')
  .map((l) => l.trimStart())
  .filter((l) => l.startsWith('address:'))
  .map((l) => l.slice('address:'.length).split(' #')[0].trim().replace(/^['"]|['"]$/g, ''));
const parsed = document.channels().all().map((c) => c.address());
const sorted = (a) => [...a].sort();
if (JSON.stringify(sorted(scanned)) !== JSON.stringify(sorted(parsed))) {
  console.error(`${file}: the address line scan disagrees with the parser`);
  console.error(`  parsed:  ${JSON.stringify(sorted(parsed))}`);
  console.error(`  scanned: ${JSON.stringify(sorted(scanned))}`);
  process.exit(1);
}

if (channelsMode) {
  console.log(JSON.stringify(sorted(parsed)));
} else {
  const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).length;
  console.log(
    `${file}: valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
      `${document.operations().length} operations, ${document.messages().length} messages, ` +
      `${warnings} warning(s), ${examples} example(s) match their schema; ` +
      'channel addresses match the address scan',
  );
}

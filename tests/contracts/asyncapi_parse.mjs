// Parse contracts/asyncapi.yaml with the AsyncAPI project's own parser (npm @asyncapi/parser), which
// resolves the $refs to contracts/schemas/events/*.json and validates the document (and its message
// examples) with its ruleset. Prints one JSON object: diagnostics and what the document holds.
import { createRequire } from "node:module";
import { resolve } from "node:path";

const require = createRequire(resolve(process.env.ASYNCAPI_NODE_MODULES, "..", "package.json"));
const { Parser, fromFile } = require("@asyncapi/parser");

const path = process.argv[2];
const { document, diagnostics } = await fromFile(new Parser(), path).parse();
const out = {
  diagnostics: diagnostics.map((d) => ({ code: d.code, message: d.message, severity: d.severity, path: d.path })),
  parsed: Boolean(document),
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  messages: document ? document.messages().all().map((m) => m.name()) : [],
  examples: document ? document.messages().all().reduce((n, m) => n + m.examples().all().length, 0) : 0,
};
console.log(JSON.stringify(out));

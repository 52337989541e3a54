// Validate an AsyncAPI document with the official parser; prints diagnostics as JSON, exit 1 on errors.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2], "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics.filter((d) => d.severity === 0);
console.log(JSON.stringify({ parsed: document !== undefined, errors: errors.map((d) => ({ code: d.code, message: d.message, path: d.path })), warnings: diagnostics.filter((d) => d.severity === 1).map((d) => ({ code: d.code, message: d.message, path: d.path })) }, null, 1));
process.exit(document !== undefined && errors.length === 0 ? 0 : 1);

// Runs the examples of docs/clients/typescript.md (compiled from test/docs/guide.ts, which
// scripts/extract-guide.mjs extracts) against a fresh server on each backend.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { type Server, backends, startServer } from "./server.js";

for (const backend of backends()) {
  describe(`docs/clients/typescript.md on ${backend}`, () => {
    let server: Server;
    before(async () => {
      server = await startServer(backend);
    });
    after(async () => {
      await server?.stop();
    });

    test("every example runs", async () => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [join(import.meta.dirname, "docs/guide.js")],
        { env: { ...process.env, LEADPIPE_URL: server.url }, timeout: 60_000 },
      ).catch((error) => assert.fail(`the guide's examples failed:\n${error.stdout}\n${error.stderr}`));
      assert.match(stdout, /STAGE_CRITERION contact_known/);
      assert.match(stdout, /lead\.expected_close_time/);
    });
  });
}

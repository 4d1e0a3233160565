// Starts a real `leadpipe serve` for the Node tests, as tests/python/conftest.py does: on SQLite,
// and on PostgreSQL when LEADPIPE_TEST_DATABASE_URL is set (each run in a database of its own;
// CI fails rather than skip when it is missing). The binary is LEADPIPE_BIN or
// target/debug/leadpipe.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createLeadpipeClient } from "@leadpipe/client";

const REPO = resolve(import.meta.dirname, "../../../..");
const PG_URL_VAR = "LEADPIPE_TEST_DATABASE_URL";

export type Backend = "sqlite" | "postgres";

export interface Server {
  backend: Backend;
  url: string;
  /** Stops the server and starts it again on the same port and database. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** The backends to run on; PostgreSQL only with LEADPIPE_TEST_DATABASE_URL (required in CI). */
export function backends(): Backend[] {
  if (process.env[PG_URL_VAR]) {
    return ["sqlite", "postgres"];
  }
  if (process.env.CI) {
    throw new Error(`CI is set but ${PG_URL_VAR} is not: the PostgreSQL run cannot be skipped`);
  }
  return ["sqlite"];
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => ok(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export async function startServer(backend: Backend): Promise<Server> {
  const binary = process.env.LEADPIPE_BIN ?? join(REPO, "target/debug/leadpipe");
  if (!existsSync(binary)) {
    throw new Error(`${binary} does not exist: run \`cargo build --bin leadpipe\` first`);
  }
  const work = mkdtempSync(join(tmpdir(), `leadpipe-node-${backend}-`));
  let databaseUrl: string;
  let dropDatabase = () => {};
  if (backend === "sqlite") {
    databaseUrl = `sqlite://${work}/leadpipe.db`;
  } else {
    const admin = process.env[PG_URL_VAR]!;
    // The leadpipe_test_ prefix lets .ci/run drop databases that a killed run left behind.
    const name = `leadpipe_test_node_${randomUUID().replaceAll("-", "")}`;
    execFileSync("psql", [admin, "-qc", `CREATE DATABASE ${name}`], { stdio: "ignore" });
    databaseUrl = `${admin.slice(0, admin.lastIndexOf("/"))}/${name}`;
    dropDatabase = () =>
      execFileSync("psql", [admin, "-qc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], {
        stdio: "ignore",
      });
  }
  const port = await freePort();
  const log = join(work, "leadpipe.log");
  let child: ChildProcess | undefined;

  const start = async () => {
    child = spawn(binary, ["serve"], {
      env: {
        ...process.env,
        LEADPIPE_DATABASE_URL: databaseUrl,
        LEADPIPE_LISTEN: `127.0.0.1:${port}`,
        LEADPIPE_SQLITE_SYNCHRONOUS: "normal",
        RUST_LOG: "warn",
        NO_COLOR: "1",
      },
      stdio: ["ignore", openSync(log, "a"), openSync(log, "a")],
    });
    const client = createLeadpipeClient({ url: `http://127.0.0.1:${port}` });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) {
        throw new Error(`leadpipe exited with ${child.exitCode}:\n${readFileSync(log, "utf8")}`);
      }
      try {
        await client.leads.listLeads({ pageSize: 1 }, { timeoutMs: 1000 });
        return;
      } catch (error) {
        if (Date.now() > deadline) {
          throw new Error(`leadpipe did not answer: ${error}\n${readFileSync(log, "utf8")}`);
        }
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
  };
  const stopProcess = async () => {
    const running = child;
    if (running === undefined || running.exitCode !== null) {
      return;
    }
    const exited = new Promise((ok) => running.once("exit", ok));
    running.kill("SIGTERM");
    const timer = setTimeout(() => running.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return {
    backend,
    url: `http://127.0.0.1:${port}`,
    restart: async () => {
      await stopProcess();
      await start();
    },
    stop: async () => {
      await stopProcess();
      dropDatabase();
    },
  };
}

/**
 * The extension itself (activate, the language client, the status bar, the commands, the
 * restart after a crash, the missing-package message) against the real server, with a
 * fake `vscode` module standing in for VS Code (test/fakeVscode.ts).
 *
 * SEED_LSP_PYTHON: the interpreter with seed-diffusion-lsp installed (default python3).
 */

import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { after, before, describe, it } from 'node:test';

import { notInstalledMessage } from '../../src/serverCommand';
import { FakeStatusBarItem, FakeVscode } from '../fakeVscode';
import { readPackageJson } from '../paths';

const PYTHON = process.env.SEED_LSP_PYTHON || 'python3';
const READY_TIMEOUT_MS = 180_000;

type Extension = typeof import('../../src/extension');

function waitFor<T>(what: string, timeoutMs: number, poll: () => T | undefined | false): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = (): void => {
      const value = poll();
      if (value !== undefined && value !== false) {
        resolve(value);
      } else if (Date.now() - started > timeoutMs) {
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      } else {
        setTimeout(tick, 50);
      }
    };
    tick();
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the extension in a fake VS Code', { timeout: 3 * READY_TIMEOUT_MS }, () => {
  const fake = new FakeVscode();
  const subscriptions: { dispose(): unknown }[] = [];
  let extension: Extension;
  let api: ReturnType<Extension['activate']>;
  let item: FakeStatusBarItem;
  let scratch: string;
  const textOf = (): string => `${item.text} | ${item.tooltip ?? ''}\n${fake.log.slice(-20).join('\n')}`;
  const ready = (what: string): Promise<true> =>
    waitFor(what, READY_TIMEOUT_MS, () => {
      assert.ok(!item.text.startsWith('$(error)'), `error state: ${textOf()}`);
      return item.text.startsWith('$(sparkle) Seed') || undefined;
    }).catch((error: Error) => {
      throw new Error(`${error.message}\n${textOf()}`);
    });

  before(async () => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'seed-lsp-host-'));
    process.env.OMP_NUM_THREADS = '1';
    fake.install();
    fake.config = { pythonPath: PYTHON, threads: 1, languages: ['python'], enabled: true, logLevel: 'info' };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    extension = require('../../src/extension') as Extension; // after fake.install()
    api = extension.activate({ subscriptions } as never);
    assert.equal(fake.statusItems.length, 1);
    item = fake.statusItems[0];
  });

  after(async () => {
    if (process.env.SEED_LSP_TEST_LOG) {
      console.log(fake.log.join('\n'));
    }
    await extension?.deactivate();
    for (const d of subscriptions) {
      d.dispose();
    }
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('starts the server and shows "ready" in the status bar', async () => {
    assert.ok(item.visible);
    await ready('the status bar to show ready');
    assert.equal(item.command, 'seedLsp.toggleCompletions');
    assert.match(String(item.tooltip), /completions on/);
    assert.match(String(item.tooltip), /Device: /);
    assert.ok(api.serverPid());
  });

  it('registers its commands, the server commands and an inline completion provider, without conflicts', () => {
    const contributed = (readPackageJson().contributes as { commands: { command: string }[] }).commands.map((c) => c.command);
    for (const command of [...contributed, 'seedLsp.toggle', 'seedLsp.status', 'seedLsp.clearCache']) {
      assert.ok(fake.commands.has(command), `${command} is not registered`);
    }
    assert.equal(fake.inlineProviders.length, 1, 'vscode-languageclient registered no inline completion provider');
    assert.match(JSON.stringify(fake.inlineProviders[0].selector), /"language":"python"/);
  });

  it('toggles completions from the status bar, and the toggle survives a settings change', async () => {
    await fake.commands.get(item.command as string)?.();
    assert.equal(item.text, '$(circle-slash) Seed');
    fake.changeConfig({ maxTokensLine: 16 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await fake.commands.get('seedLsp.showStatus')?.();
    assert.match(fake.messages.at(-1)?.message ?? '', /completions off/);
    assert.equal(item.text, '$(circle-slash) Seed');
    await fake.commands.get('seedLsp.toggleCompletions')?.();
    assert.ok(item.text.startsWith('$(sparkle) Seed'), item.text);
    await fake.commands.get('seedLsp.clearCompletionCache')?.();
    assert.match(fake.messages.at(-1)?.message ?? '', /cache cleared/);
  });

  it('restarts the server after a crash', async () => {
    const pid = api.serverPid();
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor('the restarting state', 10_000, () => item.text.startsWith('$(sync~spin)') || undefined);
    assert.equal(item.backgroundColor?.id, 'statusBarItem.warningBackground');
    await ready('the restarted server');
    const next = api.serverPid();
    assert.ok(next && next !== pid, 'no new server process');
    assert.ok(fake.log.some((line) => line.includes('restarting in 1000 ms')), fake.log.join('\n'));
  });

  it('explains a missing package and does not restart in a loop', async () => {
    const fakePython = path.join(scratch, 'python');
    fs.writeFileSync(fakePython, "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'lsp_server'\" >&2\nexit 1\n", { mode: 0o755 });
    const pid = api.serverPid();
    assert.ok(pid);
    fake.changeConfig({ pythonPath: fakePython });
    await waitFor('the not-installed state', 30_000, () => item.text.startsWith('$(error)') || undefined);
    assert.equal(item.command, 'seedLsp.explainInstall');
    assert.equal(item.tooltip, notInstalledMessage(fakePython));
    const shown = fake.messages.find((m) => m.level === 'error' && m.message.includes(notInstalledMessage(fakePython)));
    assert.ok(shown, JSON.stringify(fake.messages));
    assert.deepEqual(shown.items, ['Copy Install Command', 'Open Settings', 'Retry']);
    await waitFor('the old server to exit', 10_000, () => !alive(pid) || undefined);
    assert.equal(api.serverPid(), undefined);
  });
});

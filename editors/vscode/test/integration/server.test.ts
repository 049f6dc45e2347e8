/**
 * The real server, started exactly as the extension starts it: the command from
 * buildServerCommand, the initializationOptions from the package.json defaults through
 * toServerSettings, the process from spawnServer. A Node LSP client (vscode-jsonrpc /
 * vscode-languageserver-protocol over stdio) stands in for VS Code.
 *
 * SEED_LSP_PYTHON: the interpreter with seed-diffusion-lsp installed (default python3).
 */

import { strict as assert } from 'assert';
import { ChildProcess, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { after, before, describe, it } from 'node:test';
import {
  createProtocolConnection,
  DidChangeConfigurationNotification,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  InitializedNotification,
  InitializeRequest,
  InitializeResult,
  InlineCompletionList,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LogMessageNotification,
  MessageType,
  ProtocolConnection,
  PublishDiagnosticsNotification,
  PublishDiagnosticsParams,
  ShowMessageNotification,
  ShowMessageParams,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageserver-protocol/node';

import { buildServerCommand, pythonFrom } from '../../src/serverCommand';
import { checkInstalled, spawnServer } from '../../src/serverProcess';
import { declaredDefaults, didChangeConfigurationParams, initializationOptions, RawConfig, SERVER_KEYS } from '../../src/settings';
import { parseStatus, SeedStatus, STATUS_NOTIFICATION } from '../../src/statusView';
import { readPackageJson } from '../paths';

const PYTHON = process.env.SEED_LSP_PYTHON || 'python3';
const READY_TIMEOUT_MS = 180_000;

/** Text with an astral character before the cursor (2 UTF-16 units, 1 code point, 4 UTF-8 bytes). */
const LINES = [
  'import os',
  '',
  '',
  'def read_lines(path):',
  '    with open(path) as f:',
  '        return [line.rstrip() for line in f]',
  '',
  '',
  'def main():',
  '    banner = "héllo 😀"',
  '    for name in os.listdir("."):',
  '        ',
  '',
  '',
  'def broken(:',
  '    pass',
  '',
];
const TEXT = LINES.join('\n');

function waitFor<T>(what: string, timeoutMs: number, poll: () => T | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = (): void => {
      let value: T | undefined;
      try {
        value = poll();
      } catch (error) {
        reject(error);
        return;
      }
      if (value !== undefined) {
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

function assertPosition(value: unknown, lines: string[], what: string): { line: number; character: number } {
  assert.equal(typeof value, 'object', `${what} is not an object`);
  const p = value as { line: unknown; character: unknown };
  assert.ok(Number.isInteger(p.line) && Number.isInteger(p.character), `${what} is not {line, character}: ${JSON.stringify(value)}`);
  const line = p.line as number;
  const character = p.character as number;
  assert.ok(line >= 0 && line < lines.length, `${what}.line ${line} outside the document`);
  assert.ok(character >= 0 && character <= lines[line].length, `${what}.character ${character} outside line ${line} (UTF-16 length ${lines[line].length})`);
  return { line, character };
}

function assertInlineCompletionList(value: unknown, lines: string[]): InlineCompletionList {
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), `not an InlineCompletionList: ${JSON.stringify(value)}`);
  const list = value as { items: unknown };
  assert.ok(Array.isArray(list.items), 'items is not an array');
  for (const [i, item] of (list.items as unknown[]).entries()) {
    const it = item as { insertText: unknown; range?: { start: unknown; end: unknown } };
    const text = typeof it.insertText === 'string' ? it.insertText : (it.insertText as { value?: unknown } | undefined)?.value;
    assert.equal(typeof text, 'string', `items[${i}].insertText is not a string or StringValue`);
    if (it.range !== undefined) {
      const start = assertPosition(it.range.start, lines, `items[${i}].range.start`);
      const end = assertPosition(it.range.end, lines, `items[${i}].range.end`);
      assert.ok(start.line < end.line || (start.line === end.line && start.character <= end.character), `items[${i}].range is reversed`);
    }
  }
  return value as InlineCompletionList;
}

describe('the real server, started as the extension starts it', { timeout: READY_TIMEOUT_MS + 120_000 }, () => {
  let workspace: string;
  let config: RawConfig;
  let child: ChildProcess;
  let connection: ProtocolConnection;
  let stderr = '';
  let exit: Promise<number | null>;
  const statuses: SeedStatus[] = [];
  const messages: ShowMessageParams[] = [];
  const diagnostics = new Map<string, PublishDiagnosticsParams>();
  let initializeResult: InitializeResult;
  let uri: string;

  before(async () => {
    workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'seed-lsp-vscode-'));
    // The defaults a new user has, with the interpreter under test; one onnxruntime thread
    // (a setting a user could make) so the test stays light on a shared machine.
    config = { ...declaredDefaults(readPackageJson()), pythonPath: PYTHON, threads: 1 };
    const ctx = { workspaceFolder: workspace, home: os.homedir() };
    const check = await checkInstalled(pythonFrom(config, ctx));
    assert.equal(check.kind, 'ok', `${JSON.stringify(check)} (set SEED_LSP_PYTHON to an interpreter with seed-diffusion-lsp)`);

    const server = buildServerCommand(config, ctx);
    assert.deepEqual(server.args, ['-m', 'lsp_server']);
    child = spawnServer(server, { ...process.env, OMP_NUM_THREADS: '1' });
    exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    child.stderr?.on('data', (chunk) => (stderr += String(chunk)));
    assert.ok(child.stdout && child.stdin);
    connection = createProtocolConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    connection.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      const status = parseStatus(params);
      assert.ok(status, `malformed ${STATUS_NOTIFICATION}: ${JSON.stringify(params)}`);
      statuses.push(status);
    });
    connection.onNotification(ShowMessageNotification.type, (params) => {
      messages.push(params);
    });
    connection.onNotification(LogMessageNotification.type, () => undefined);
    connection.onNotification(PublishDiagnosticsNotification.type, (params) => {
      diagnostics.set(params.uri, params);
    });
    connection.onRequest(WorkDoneProgressCreateRequest.type, () => undefined);
    connection.onNotification('$/progress', () => undefined);
    connection.listen();

    initializeResult = await connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      clientInfo: { name: 'seed-lsp-vscode-tests', version: '0' },
      rootUri: `file://${workspace}`,
      workspaceFolders: [{ uri: `file://${workspace}`, name: 'ws' }],
      initializationOptions: initializationOptions(config, ctx),
      capabilities: {
        general: { positionEncodings: ['utf-16'] },
        window: { workDoneProgress: true },
        workspace: { didChangeConfiguration: { dynamicRegistration: true }, executeCommand: { dynamicRegistration: true } },
        textDocument: {
          synchronization: { dynamicRegistration: true, didSave: true },
          inlineCompletion: { dynamicRegistration: true },
          completion: { completionItem: { snippetSupport: true } },
          codeAction: {
            resolveSupport: { properties: ['edit'] },
            codeActionLiteralSupport: { codeActionKind: { valueSet: ['quickfix', 'refactor.rewrite'] } },
          },
          publishDiagnostics: { versionSupport: true },
        },
      },
    });
    await connection.sendNotification(InitializedNotification.type, {});
  });

  after(async () => {
    if (child !== undefined && child.exitCode === null) {
      child.kill();
    }
    connection?.dispose();
    if (workspace !== undefined) {
      fs.rmSync(workspace, { recursive: true, force: true });
    }
  });

  it('answers initialize with the features the extension relies on', () => {
    const caps = initializeResult.capabilities;
    assert.ok(caps.inlineCompletionProvider, 'no inlineCompletionProvider: VS Code would show no ghost text');
    assert.ok(caps.positionEncoding === undefined || caps.positionEncoding === 'utf-16', `position encoding ${caps.positionEncoding}`);
    const commands = caps.executeCommandProvider?.commands ?? [];
    for (const command of ['seedLsp.toggle', 'seedLsp.status', 'seedLsp.clearCache']) {
      assert.ok(commands.includes(command), `server does not offer ${command}`);
    }
  });

  it('reports ready through seedLsp/status', async () => {
    const status = await waitFor('seedLsp/status "ready"', READY_TIMEOUT_MS, () => {
      const last = statuses.at(-1);
      if (last?.state === 'error') {
        throw new Error(`model did not load: ${last.error}\n${stderr}`);
      }
      return last?.state === 'ready' ? last : undefined;
    });
    assert.equal(status.enabled, true);
    assert.equal(typeof status.model, 'string');
    assert.equal(typeof status.device, 'string');
  });

  it('returns a well-formed inline completion list for a Python document', async (t) => {
    uri = `file://${path.join(workspace, 'demo.py')}`;
    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'python', version: 1, text: TEXT },
    });
    const position = { line: 11, character: 8 };
    const result = await connection.sendRequest(InlineCompletionRequest.type, {
      textDocument: { uri },
      position,
      context: { triggerKind: InlineCompletionTriggerKind.Automatic, selectedCompletionInfo: undefined },
    });
    const list = assertInlineCompletionList(result, LINES);
    t.diagnostic(`inline completion at 12:9: ${JSON.stringify(list.items)}`);
    for (const item of list.items) {
      if (item.range !== undefined) {
        assert.deepEqual(item.range.start, position, 'the completion does not start at the cursor');
      }
    }
    const status = parseStatus(await connection.sendRequest(ExecuteCommandRequest.type, { command: 'seedLsp.status', arguments: [] }));
    assert.ok(status, 'seedLsp.status returned no status');
    if (list.items.length > 0) {
      assert.equal(typeof status.lastLatencyMs, 'number');
    }
  });

  it('counts positions in UTF-16 units, as VS Code does', async () => {
    const line = 9; // '    banner = "héllo 😀"'
    const position = { line, character: LINES[line].length - 1 }; // just before the closing quote, after the emoji
    const result = await connection.sendRequest(InlineCompletionRequest.type, {
      textDocument: { uri },
      position,
      context: { triggerKind: InlineCompletionTriggerKind.Invoked, selectedCompletionInfo: undefined },
    });
    const list = assertInlineCompletionList(result, LINES);
    for (const item of list.items) {
      if (item.range !== undefined) {
        assert.deepEqual(item.range.start, position);
      }
    }
  });

  it('publishes the syntax error as a problem', async () => {
    const published = await waitFor('diagnostics', 30_000, () => diagnostics.get(uri));
    assert.ok(published.diagnostics.length >= 1, 'no diagnostic for "def broken(:"');
    for (const d of published.diagnostics) {
      assertPosition(d.range.start, LINES, 'diagnostic start');
      assertPosition(d.range.end, LINES, 'diagnostic end');
    }
  });

  it('toggles completions off and on with seedLsp.toggle', async () => {
    const off = parseStatus(await connection.sendRequest(ExecuteCommandRequest.type, { command: 'seedLsp.toggle', arguments: [] }));
    assert.ok(off);
    assert.equal(off.enabled, false);
    assert.equal(off.state, 'disabled');
    const none = await connection.sendRequest(InlineCompletionRequest.type, {
      textDocument: { uri },
      position: { line: 11, character: 8 },
      context: { triggerKind: InlineCompletionTriggerKind.Automatic, selectedCompletionInfo: undefined },
    });
    assert.ok(none === null || (Array.isArray((none as InlineCompletionList).items) && (none as InlineCompletionList).items.length === 0),
      `completions while disabled: ${JSON.stringify(none)}`);
    await waitFor('a "disabled" status notification', 10_000, () => (statuses.at(-1)?.state === 'disabled' ? true : undefined));
    const on = parseStatus(await connection.sendRequest(ExecuteCommandRequest.type, { command: 'seedLsp.toggle', arguments: [] }));
    assert.ok(on);
    assert.equal(on.enabled, true);
    assert.equal(on.state, 'ready');
  });

  it('accepts the settings on change, nested under seedLsp, without complaint', async () => {
    const before = statuses.length;
    const changed = { ...config, maxTokensLine: 16, tau: 0.8, minConfidence: 0.05 };
    await connection.sendNotification(DidChangeConfigurationNotification.type, didChangeConfigurationParams(changed, { workspaceFolder: workspace }));
    await waitFor('a status after the settings change', 10_000, () => (statuses.length > before ? true : undefined));
    assert.equal(statuses.at(-1)?.state, 'ready');
    const cleared = parseStatus(await connection.sendRequest(ExecuteCommandRequest.type, { command: 'seedLsp.clearCache', arguments: [] }));
    assert.ok(cleared);
  });

  it('never warned about a setting the extension sent', () => {
    const complaints = messages.filter((m) => m.type === MessageType.Warning || m.type === MessageType.Error);
    assert.deepEqual(complaints.map((m) => m.message), []);
  });

  it('shuts down cleanly', async () => {
    await connection.sendRequest(ShutdownRequest.type);
    await connection.sendNotification(ExitNotification.type);
    const code = await Promise.race([exit, new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), 20_000))]);
    assert.equal(code, 0, `server exit: ${code}\n${stderr.slice(-2000)}`);
  });
});

describe('package.json mirrors the server settings (lsp_server/config.py)', () => {
  it('has one setting per server field, with its default, range and choices', () => {
    const script = [
      'import json, dataclasses',
      'from lsp_server import config',
      'camel = lambda n: n.split("_")[0] + "".join(w.title() for w in n.split("_")[1:])',
      'out = {}',
      'for f in dataclasses.fields(config.Settings):',
      '    d = f.default',
      '    out[camel(f.name)] = {"default": list(d) if isinstance(d, tuple) else d,',
      '                          "range": config.RANGES.get(f.name), "choices": config.CHOICES.get(f.name)}',
      'print(json.dumps(out))',
    ].join('\n');
    const server = JSON.parse(execFileSync(PYTHON, ['-c', script], { encoding: 'utf8', cwd: os.tmpdir() })) as Record<
      string,
      { default: unknown; range: [number, number] | null; choices: string[] | null }
    >;
    assert.deepEqual(Object.keys(server).sort(), [...SERVER_KEYS].sort(), 'settings.ts SERVER_KEYS differ from the server Settings fields');
    const properties = (readPackageJson().contributes as { configuration: { properties: Record<string, Record<string, unknown>> } })
      .configuration.properties;
    for (const [key, spec] of Object.entries(server)) {
      const schema = properties[`seedLsp.${key}`];
      assert.ok(schema, `package.json lacks seedLsp.${key}`);
      assert.deepEqual(schema.default, spec.default, `seedLsp.${key} default`);
      if (spec.range !== null) {
        assert.deepEqual([schema.minimum, schema.maximum], spec.range, `seedLsp.${key} range`);
      }
      if (spec.choices !== null) {
        assert.deepEqual(schema.enum, spec.choices, `seedLsp.${key} choices`);
      }
    }
  });
});

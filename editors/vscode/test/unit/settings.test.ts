import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { describe, it } from 'node:test';

import {
  declaredDefaults,
  didChangeConfigurationParams,
  documentSelector,
  expandPath,
  EXTENSION_KEYS,
  initializationOptions,
  RawConfig,
  SERVER_KEYS,
  servedLanguages,
  toServerSettings,
} from '../../src/settings';
import { EXTENSION_ROOT, readPackageJson } from '../paths';

const ctx = { workspaceFolder: '/work/project', home: '/home/me' };
const pkg = readPackageJson();
const defaults = declaredDefaults(pkg);

/** What a user who changed nothing sends, per lsp_server/config.py's Settings defaults. */
const SERVER_DEFAULTS = {
  bundle: null,
  device: 'auto',
  threads: 0,
  enabled: true,
  languages: ['python'],
  inlineCompletion: true,
  completionItems: true,
  diagnostics: true,
  codeActions: true,
  mode: 'auto',
  verify: true,
  draft: 'lookup',
  draftMinMatch: 2,
  draftTokens: 4,
  blockSize: 8,
  tau: 0.9,
  maxTokensLine: 32,
  maxTokensBlock: 64,
  temperature: 0,
  n: 1,
  prefixTokens: 0,
  suffixTokens: 0,
  minConfidence: 0,
  cacheMb: 256,
  kvLimitMb: 1024,
  bundleCheckMs: 2000,
  debounceMs: 300,
  requestTimeoutMs: 5000,
  logLevel: 'info',
  logDocumentText: false,
};

describe('package.json configuration', () => {
  it('declares exactly the server settings plus the extension-only ones', () => {
    assert.deepEqual(Object.keys(defaults).sort(), [...SERVER_KEYS, ...EXTENSION_KEYS].sort());
  });

  it('has the server defaults', () => {
    assert.deepEqual(toServerSettings(defaults, ctx), SERVER_DEFAULTS);
    assert.equal(defaults.pythonPath, 'python3');
    assert.equal(defaults['trace.server'], 'off');
  });

  it('activates on Python only, never on *, without proposed APIs', () => {
    assert.deepEqual(pkg.activationEvents, ['onLanguage:python']);
    assert.equal(pkg.enabledApiProposals, undefined);
  });

  it('asks for a VS Code the language client supports, with matching @types/vscode', () => {
    const minimum = (range: string): number[] => range.replace(/^[\^~>=\s]+/, '').split('.').map(Number);
    const compare = (a: number[], b: number[]): number => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
    const client = JSON.parse(fs.readFileSync(path.join(EXTENSION_ROOT, 'node_modules/vscode-languageclient/package.json'), 'utf8')) as {
      version: string;
      engines: { vscode: string };
    };
    const ours = minimum((pkg.engines as { vscode: string }).vscode);
    assert.ok(compare(ours, minimum(client.engines.vscode)) >= 0, `engines.vscode below ${client.engines.vscode}`);
    const types = minimum((pkg.devDependencies as Record<string, string>)['@types/vscode']);
    assert.ok(compare(types, ours) <= 0, '@types/vscode newer than engines.vscode (vsce rejects that)');
    const [major, minor, patch] = minimum(client.version);
    assert.ok(major > 10 || (major === 10 && (minor > 0 || patch >= 1)), `vscode-languageclient ${client.version} < 10.0.1`);
  });

  it('registers every contributed command', () => {
    const source = fs.readFileSync(path.join(EXTENSION_ROOT, 'src/extension.ts'), 'utf8');
    const commands = (pkg.contributes as { commands: { command: string }[] }).commands.map((c) => c.command);
    assert.ok(commands.length >= 5);
    for (const command of commands) {
      assert.ok(source.includes(`'${command}'`), `${command} is contributed but not registered`);
    }
  });

  it('restricts the interpreter and bundle settings in untrusted workspaces', () => {
    const caps = pkg.capabilities as { untrustedWorkspaces: { restrictedConfigurations: string[] } };
    assert.deepEqual(caps.untrustedWorkspaces.restrictedConfigurations.sort(), ['seedLsp.bundle', 'seedLsp.pythonPath']);
  });
});

describe('toServerSettings', () => {
  it('never sends the extension-only settings', () => {
    const out = toServerSettings({ ...defaults, pythonPath: '/usr/bin/python3', 'trace.server': 'verbose' }, ctx);
    assert.equal('pythonPath' in out, false);
    assert.equal('trace.server' in out, false);
  });

  it('lets the session toggle win over seedLsp.enabled', () => {
    assert.equal(toServerSettings({ ...defaults, enabled: true }, ctx, false).enabled, false);
    assert.equal(toServerSettings({ ...defaults, enabled: false }, ctx, true).enabled, true);
    assert.equal(toServerSettings({ ...defaults, enabled: false }, ctx).enabled, false);
  });

  it('maps an empty bundle to null (the default model) and expands paths', () => {
    assert.equal(toServerSettings({ bundle: '' }, ctx).bundle, null);
    assert.equal(toServerSettings({ bundle: '   ' }, ctx).bundle, null);
    assert.equal(toServerSettings({ bundle: null }, ctx).bundle, null);
    assert.equal(toServerSettings({}, ctx).bundle, null);
    assert.equal(toServerSettings({ bundle: '~/models/b' }, ctx).bundle, '/home/me/models/b');
    assert.equal(toServerSettings({ bundle: '${workspaceFolder}/m' }, ctx).bundle, '/work/project/m');
    assert.equal(toServerSettings({ bundle: 'models/b' }, ctx).bundle, '/work/project/models/b');
    assert.equal(toServerSettings({ bundle: '/abs/b' }, ctx).bundle, '/abs/b');
    assert.equal(toServerSettings({ bundle: 'models/b' }, { home: '/h' }).bundle, 'models/b');
  });

  it('cleans the language list', () => {
    assert.deepEqual(toServerSettings({ languages: [' python', 'python', '', 'rust', 3] }).languages, ['python', 'rust']);
    assert.deepEqual(toServerSettings({ languages: '*' }).languages, ['*']);
    assert.deepEqual(toServerSettings({ languages: [] }).languages, []);
    assert.equal('languages' in toServerSettings({ languages: 7 }), false);
  });

  it('leaves out values that are not JSON scalars; the server validates the rest', () => {
    const out = toServerSettings({ tau: Number.NaN, n: Infinity, blockSize: { a: 1 }, threads: undefined, device: 'tpu', maxTokensLine: 16 });
    assert.deepEqual(out, { bundle: null, device: 'tpu', maxTokensLine: 16 });
  });

  it('sends flat options at initialize and nests them under seedLsp on change', () => {
    const config: RawConfig = { ...defaults, blockSize: 4, tau: 0.5 };
    const init = initializationOptions(config, ctx);
    assert.equal(init.blockSize, 4);
    assert.deepEqual(didChangeConfigurationParams(config, ctx), { settings: { seedLsp: init } });
    assert.deepEqual(JSON.parse(JSON.stringify(init)), init, 'JSON round trip');
  });
});

describe('expandPath', () => {
  it('expands ~, ${userHome} and ${workspaceFolder}', () => {
    assert.equal(expandPath('~', ctx, false), '/home/me');
    assert.equal(expandPath('${userHome}/x', ctx, false), '/home/me/x');
    assert.equal(expandPath('${workspaceFolder}/.venv/bin/python', ctx, false), '/work/project/.venv/bin/python');
    assert.equal(expandPath('${workspaceFolder}/x', { home: '/h' }, true), '${workspaceFolder}/x');
  });
});

describe('document selector', () => {
  it('covers saved and untitled documents of the served languages', () => {
    assert.deepEqual(documentSelector(['python']), [
      { language: 'python', scheme: 'file' },
      { language: 'python', scheme: 'untitled' },
    ]);
    assert.deepEqual(documentSelector(['*']), [{ scheme: 'file' }, { scheme: 'untitled' }]);
    assert.deepEqual(documentSelector([]), []);
  });

  it('reads the served languages from the configuration', () => {
    assert.deepEqual(servedLanguages({ languages: ['python', 'cython'] }), ['python', 'cython']);
    assert.deepEqual(servedLanguages({}), ['python']);
  });
});

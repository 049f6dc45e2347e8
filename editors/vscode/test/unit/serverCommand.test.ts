import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, it } from 'node:test';

import {
  buildImportCheck,
  buildServerCommand,
  diagnose,
  installCommand,
  missingModule,
  notInstalledMessage,
  pythonFrom,
  showStderrLine,
  TailBuffer,
} from '../../src/serverCommand';
import { checkInstalled, spawnServer } from '../../src/serverProcess';

const ctx = { workspaceFolder: '/work/project', home: '/home/me' };

describe('server command', () => {
  it('is <python> -m lsp_server, python3 by default, in the workspace folder', () => {
    const cmd = buildServerCommand({}, ctx);
    assert.equal(cmd.command, 'python3');
    assert.deepEqual(cmd.args, ['-m', 'lsp_server']);
    assert.equal(cmd.cwd, '/work/project');
    assert.equal(cmd.env.PYTHONUNBUFFERED, '1');
    assert.equal(buildServerCommand({ pythonPath: '  ' }, { home: '/h' }).cwd, '/h');
  });

  it('takes the interpreter from seedLsp.pythonPath', () => {
    assert.equal(pythonFrom({ pythonPath: '/opt/py/bin/python' }, ctx), '/opt/py/bin/python');
    assert.equal(pythonFrom({ pythonPath: 'python3.12' }, ctx), 'python3.12');
    assert.equal(pythonFrom({ pythonPath: '~/venv/bin/python' }, ctx), '/home/me/venv/bin/python');
    assert.equal(pythonFrom({ pythonPath: '.venv/bin/python' }, ctx), '/work/project/.venv/bin/python');
    assert.equal(pythonFrom({ pythonPath: '${workspaceFolder}/.venv/bin/python' }, ctx), '/work/project/.venv/bin/python');
    assert.equal(pythonFrom({ pythonPath: 42 }, ctx), 'python3');
  });

  it('checks the import with -c', () => {
    assert.deepEqual(buildImportCheck('py'), { command: 'py', args: ['-c', 'import lsp_server'] });
  });
});

describe('diagnosis of a failed start', () => {
  it('says how to install the package', () => {
    assert.equal(
      notInstalledMessage('/usr/bin/python3'),
      'seed-diffusion-lsp is not installed for /usr/bin/python3: run `/usr/bin/python3 -m pip install seed-diffusion-lsp[cpu]` or set seedLsp.pythonPath',
    );
    assert.equal(installCommand('/My Py/python'), '"/My Py/python" -m pip install seed-diffusion-lsp[cpu]');
  });

  it('recognizes the missing module in either wording', () => {
    assert.equal(missingModule("Traceback ...\nModuleNotFoundError: No module named 'lsp_server'\n"), 'lsp_server');
    assert.equal(missingModule('/usr/bin/python3: No module named lsp_server\n'), 'lsp_server');
    assert.equal(missingModule("ModuleNotFoundError: No module named 'onnxruntime.capi'"), 'onnxruntime.capi');
    assert.equal(missingModule('ValueError: nope'), undefined);
  });

  it('tells the cases apart', () => {
    const py = 'python3';
    assert.deepEqual(diagnose(py, { exitCode: 0, stderr: '' }), { kind: 'ok' });
    assert.equal(diagnose(py, { spawnErrorCode: 'ENOENT', exitCode: null, stderr: '' }).kind, 'noInterpreter');
    const missing = diagnose(py, { exitCode: 1, stderr: "ModuleNotFoundError: No module named 'lsp_server'" });
    assert.deepEqual(missing, { kind: 'notInstalled', module: 'lsp_server', message: notInstalledMessage(py) });
    const dep = diagnose(py, { exitCode: 1, stderr: "ModuleNotFoundError: No module named 'pygls'" });
    assert.equal(dep.kind, 'notInstalled');
    assert.match(dep.message, /missing its dependency 'pygls'.*pip install seed-diffusion-lsp\[cpu\]/);
    const broken = diagnose(py, { exitCode: 1, stderr: 'Traceback\nSyntaxError: invalid syntax\n' });
    assert.deepEqual(broken, { kind: 'broken', message: 'seed-diffusion-lsp cannot start with python3: SyntaxError: invalid syntax' });
  });

  it('runs the real import check', async () => {
    const missing = await checkInstalled(path.join(os.tmpdir(), 'no-such-python-here', 'python3'));
    assert.equal(missing.kind, 'noInterpreter');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seed-lsp-fake-'));
    const fake = path.join(dir, 'python');
    fs.writeFileSync(fake, "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'lsp_server'\" >&2\nexit 1\n", { mode: 0o755 });
    try {
      assert.deepEqual(await checkInstalled(fake), { kind: 'notInstalled', module: 'lsp_server', message: notInstalledMessage(fake) });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('diagnoses a server that exits at once from its stderr', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seed-lsp-fake-'));
    const fake = path.join(dir, 'python');
    fs.writeFileSync(fake, '#!/bin/sh\necho "$0: No module named $2" >&2\nexit 1\n', { mode: 0o755 });
    try {
      const child = spawnServer(buildServerCommand({ pythonPath: fake }, { home: dir }));
      const stderr = new TailBuffer();
      child.stderr?.on('data', (chunk) => stderr.append(String(chunk)));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 1);
      const result = diagnose(fake, { exitCode: code, stderr: stderr.toString() });
      assert.equal(result.kind === 'notInstalled' && result.message, notInstalledMessage(fake));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('server stderr in the log', () => {
  it('skips the log records that also arrive as window/logMessage', () => {
    const record = '2025-01-02 03:04:05,678 INFO seed_lsp.server: completion line: 12 ms';
    assert.equal(showStderrLine(record, true), false);
    assert.equal(showStderrLine(record, false), true);
    assert.equal(showStderrLine('Traceback (most recent call last):', true), true);
    assert.equal(showStderrLine('2025-01-02 03:04:05,678 ERROR pygls.protocol: boom', true), true);
    assert.equal(showStderrLine('   ', false), false);
  });

  it('keeps the tail of stderr', () => {
    const tail = new TailBuffer(5);
    tail.append('abc');
    tail.append('defg');
    assert.equal(tail.toString(), 'cdefg');
    tail.clear();
    assert.equal(tail.toString(), '');
  });
});

import { strict as assert } from 'assert';
import { describe, it } from 'node:test';

import { deviceName, modelName, parseStatus, SeedStatus, statusSummary, statusView } from '../../src/statusView';

const ready: SeedStatus = {
  state: 'ready',
  enabled: true,
  model: '/venv/lib/python3.12/site-packages/model/default/bundle',
  device: 'CPUExecutionProvider',
  variant: 'int8',
  error: null,
  lastLatencyMs: 84.6,
  cacheHitRate: 0.25,
};
const running = { phase: 'running' } as const;

describe('seedLsp/status parsing', () => {
  it('accepts what the server sends', () => {
    assert.deepEqual(parseStatus(JSON.parse(JSON.stringify(ready))), ready);
    const loading = { state: 'loading', enabled: true, model: null, device: null, variant: null, error: null, lastLatencyMs: null, cacheHitRate: 0 };
    assert.deepEqual(parseStatus(loading), loading);
  });

  it('rejects what is not a status, and tolerates missing optional fields', () => {
    assert.equal(parseStatus(null), undefined);
    assert.equal(parseStatus('ready'), undefined);
    assert.equal(parseStatus({ state: 'sleeping', enabled: true }), undefined);
    assert.equal(parseStatus({ state: 'ready' }), undefined);
    assert.deepEqual(parseStatus({ state: 'ready', enabled: true }), {
      state: 'ready', enabled: true, model: null, device: null, variant: null, error: null, lastLatencyMs: null, cacheHitRate: null,
    });
  });
});

describe('status bar item', () => {
  it('shows the latency when ready; click toggles', () => {
    const view = statusView(running, ready);
    assert.equal(view.text, '$(sparkle) Seed 85 ms');
    assert.equal(view.command, 'toggle');
    assert.equal(view.severity, 'normal');
    assert.match(view.tooltip, /completions on/);
    assert.match(view.tooltip, /Model: default\/bundle/);
    assert.match(view.tooltip, /Device: CPU \(int8\)/);
    assert.match(view.tooltip, /Last completion: 85 ms/);
    assert.match(view.tooltip, /Cache hits: 25%/);
    assert.equal(statusView(running, { ...ready, lastLatencyMs: null }).text, '$(sparkle) Seed');
  });

  it('shows disabled, loading and error', () => {
    const off = statusView(running, { ...ready, state: 'disabled', enabled: false });
    assert.equal(off.text, '$(circle-slash) Seed');
    assert.equal(off.command, 'toggle');
    assert.match(off.tooltip, /completions off/);
    assert.equal(statusView(running, { ...ready, state: 'loading' }).text, '$(loading~spin) Seed');
    const error = statusView(running, { ...ready, state: 'error', error: 'bundle.json missing' });
    assert.equal(error.severity, 'error');
    assert.match(error.tooltip, /bundle.json missing/);
    assert.equal(statusView(running).text, '$(loading~spin) Seed');
  });

  it('shows the client side: starting, restarting, stopped, not installed', () => {
    assert.equal(statusView({ phase: 'starting' }, ready).text, '$(loading~spin) Seed');
    const restarting = statusView({ phase: 'restarting', inMs: 4000, crashes: 3 });
    assert.equal(restarting.severity, 'warning');
    assert.match(restarting.tooltip, /\(3 times in a row\); restarting in 4 s/);
    const stopped = statusView({ phase: 'stopped', reason: 'it stopped 6 times in a row' });
    assert.equal(stopped.command, 'restart');
    const missing = statusView({ phase: 'notInstalled', message: 'seed-diffusion-lsp is not installed for python3: ...' });
    assert.equal(missing.command, 'explainInstall');
    assert.equal(missing.severity, 'error');
    assert.match(missing.tooltip, /not installed/);
  });

  it('names devices and models briefly', () => {
    assert.equal(deviceName('CUDAExecutionProvider'), 'CUDA');
    assert.equal(deviceName(null), null);
    assert.equal(modelName('C:\\models\\mine\\bundle'), 'mine/bundle');
    assert.equal(modelName('bundle'), 'bundle');
  });

  it('summarizes the status in one line', () => {
    assert.equal(
      statusSummary(ready),
      'Seed Diffusion LSP: completions on · Model: default/bundle · Device: CPU (int8) · Last completion: 85 ms · Cache hits: 25%',
    );
  });
});

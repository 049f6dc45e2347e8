import { strict as assert } from 'assert';
import { describe, it } from 'node:test';

import { Backoff, DEFAULT_BACKOFF } from '../../src/restart';

describe('restart backoff', () => {
  it('doubles the delay up to the cap, then gives up', () => {
    const backoff = new Backoff({ baseMs: 1000, maxMs: 8000, stableMs: 60_000, maxAttempts: 6 });
    const delays: (number | undefined)[] = [];
    for (let i = 0; i < 7; i++) {
      backoff.started(i * 10);
      delays.push(backoff.crashed(i * 10 + 5));
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000, 8000, undefined]);
    assert.equal(backoff.consecutiveCrashes, 6);
    assert.equal(backoff.crashed(1e9), undefined, 'stays given up until reset');
  });

  it('starts over after a stable run or a reset', () => {
    const backoff = new Backoff(DEFAULT_BACKOFF);
    backoff.started(0);
    assert.equal(backoff.crashed(10), 1000);
    backoff.started(20);
    assert.equal(backoff.crashed(30), 2000);
    backoff.started(100);
    assert.equal(backoff.crashed(100 + DEFAULT_BACKOFF.stableMs), 1000);
    backoff.reset();
    assert.equal(backoff.crashed(0), 1000);
  });

  it('counts a crash before any start (a failed start) as a quick crash', () => {
    const backoff = new Backoff(DEFAULT_BACKOFF);
    assert.equal(backoff.crashed(0), 1000);
    assert.equal(backoff.crashed(1), 2000);
  });
});

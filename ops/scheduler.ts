import { readFileSync } from 'node:fs';

const AUTOGROUP_SETTING = '/proc/sys/kernel/sched_autogroup_enabled';

/**
 * Whether the kernel's scheduler autogroups are on (undefined: not Linux, or no such setting).
 * While they are, a niceness ranks a process only within its session: PostgreSQL's backends,
 * Redis and ClickHouse each take as large a share as the whole pipeline, whatever the niceness
 * `npm start` gives its processes. `ops/services.sh` turns them off (README, "Running it").
 */
export function schedulerAutogroups(read: (path: string) => string = (path) => readFileSync(path, 'utf8')): boolean | undefined {
  try {
    return read(AUTOGROUP_SETTING).trim() !== '0';
  } catch {
    return undefined;
  }
}

/** The line `npm start` prints under its layout when the niceness it gives does not rank its processes against the box's services. */
export function autogroupWarning(autogroups: boolean | undefined): string | undefined {
  if (!autogroups) return undefined;
  return (
    'note: the kernel\'s scheduler autogroups are on (/proc/sys/kernel/sched_autogroup_enabled): outside a container or a ' +
    'service cgroup of its own, the niceness above ranks these processes among themselves only, not against PostgreSQL, ' +
    'Redis or ClickHouse on this box; `bash ops/services.sh` turns them off'
  );
}

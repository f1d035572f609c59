#!/usr/bin/env python3
"""Run Patroni's own behave acceptance suite against `rampart agent`, and against Patroni for comparison.

The suite is third-party (Patroni 4.1.4's `features/`, MIT) and stays where it is kept,
`../shared/reference/patroni-acceptance/features` (or $PATRONI_FEATURES): it is copied into a scratch
directory for each run and never into this repository. The suite expects to run from a Patroni source
tree: `patroni.py` and `patronictl.py` at its root and a `postgres0.yml` template there. This script
writes those three files and nothing else changes:

* `patroni.py` is the one adaptation. The suite's controller starts every member as
  `python -m coverage run ... patroni.py CONFIG`; for `--agent rampart` our `patroni.py` replaces that
  Python process with `rampart agent CONFIG` (execv: same PID, so the suite's SIGTERM, SIGKILL and
  SIGSTOP reach the agent itself). For `--agent patroni` it runs Patroni's own entry point.
* `patronictl.py` runs the real patronictl from the pinned Patroni release in both cases.
* `postgres0.yml` is the member template the suite reads and then rewrites (ports, data directory,
  pg_hba, TLS, bootstrap.dcs): our own copy of the settings Patroni's repository template has.

Every step, scenario and timeout is the suite's own. Patroni's suite starts etcd itself on
localhost:2379 and the members on 127.0.0.1:8008-8011 (REST) and 5361-5370 (PostgreSQL); the script
refuses to start if one of those ports is taken. It runs behave as the `postgres` user (PostgreSQL
refuses root) in its own session and, whatever happens, stops what is left of that session and every
PostgreSQL whose postmaster.pid lies in the scratch directory, by PID.

Prints one line per scenario and a summary per feature; with `--agent both` the two agents side by
side. Exit status 0 when every scenario that ran passed for every agent asked for.
"""

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_FEATURES_DIR = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'reference', 'patroni-acceptance',
                                                     'features'))
# The features issue 14 names; `watchdog` needs a softdog-like device emulation that the suite
# provides through a testing driver Rampart does not implement, so it is run only when asked for.
DEFAULT_FEATURES = ['basic_replication', 'patroni_api', 'priority_failover', 'recovery', 'quorum_commit',
                    'permanent_slots', 'dcs_failsafe_mode', 'nostream_node', 'ignored_slots',
                    'cascading_replication']
PATRONI_VERSION = '4.1.4'
VENV = os.environ.get('RAMPART_ACCEPTANCE_VENV', '/opt/rampart-acceptance-venv')
PIP_PACKAGES = ['patroni[etcd3]==' + PATRONI_VERSION, 'behave==1.2.6', 'coverage', 'psycopg2-binary',
                'requests', 'psutil', 'python-dateutil', 'PyYAML']
PG_BIN = os.environ.get('PG_BIN', '/usr/lib/postgresql/15/bin')
PORTS = [2379, 2380] + list(range(8008, 8012)) + list(range(5361, 5371))

# The member template. Patroni's environment.py replaces ports, name, data_dir, pgpass, pg_hba,
# callbacks and logging, removes `etcd` (the DCS comes from PATRONI_ETCD3_HOST) and adds its own
# bootstrap.dcs parameters; what it keeps from here is the rest.
POSTGRES0_YML = """\
scope: batman
namespace: /service/
name: postgresql0

restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008

etcd:
  host: 127.0.0.1:2379

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      pg_hba:
      - host replication replicator 127.0.0.1/32 md5
      - host all all 0.0.0.0/0 md5
      parameters: {}
  initdb:
  - encoding: UTF8
  - data-checksums

postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: '..'

tags:
  noloadbalance: false
  clonefrom: false
  nostream: false
"""

PATRONI_SHIM = {
    'rampart': """\
# Written by rampart's scripts/acceptance.py: start `rampart agent` where the suite starts Patroni.
import os
import sys
os.execv({bin!r}, [{bin!r}, 'agent'] + sys.argv[1:])
""",
    'patroni': """\
# Written by rampart's scripts/acceptance.py: Patroni's own entry point.
from patroni.__main__ import main
if __name__ == '__main__':
    main()
""",
}

PATRONICTL_SHIM = """\
# Written by rampart's scripts/acceptance.py: the real patronictl.
from patroni.ctl import ctl
if __name__ == '__main__':
    ctl(prog_name='patronictl')
"""


def say(msg):
    print('acceptance: ' + msg, flush=True)


def ensure_venv():
    python = os.path.join(VENV, 'bin', 'python')
    if os.path.exists(python):
        probe = subprocess.run([python, '-c', 'import behave, patroni, psycopg2, coverage, psutil, dateutil; '
                                'from patroni.version import __version__ as v; print(v)'],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == PATRONI_VERSION:
            return python
    say('installing behave and Patroni {} into {}'.format(PATRONI_VERSION, VENV))
    # Debian's Python, not whichever the caller runs: behave runs as `postgres`, which must be able to
    # execute the venv's interpreter (a root-only pyenv under /root is not).
    subprocess.run(['/usr/bin/python3', '-m', 'venv', VENV], check=True)
    subprocess.run([python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check'] + PIP_PACKAGES,
                   check=True)
    return python


def port_taken(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return True
    return False


def prepare(python, workdir, features_dir, agent, rampart_bin):
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    shutil.copytree(features_dir, os.path.join(workdir, 'features'))
    files = {'postgres0.yml': POSTGRES0_YML,
             'patroni.py': PATRONI_SHIM[agent].format(bin=rampart_bin),
             'patronictl.py': PATRONICTL_SHIM}
    for name, text in files.items():
        with open(os.path.join(workdir, name), 'w') as f:
            f.write(text)
    # A Patroni source tree has the `patroni` package beside `patroni.py`; the suite imports from it
    # (a package directory wins over the module file of the same name).
    package = subprocess.run([python, '-c', 'import os, patroni; print(os.path.dirname(patroni.__file__))'],
                             capture_output=True, text=True, check=True, cwd='/').stdout.strip()
    os.symlink(package, os.path.join(workdir, 'patroni'))
    pg = pwd.getpwnam('postgres')
    for dirpath, dirnames, filenames in os.walk(workdir):
        os.chown(dirpath, pg.pw_uid, pg.pw_gid)
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chown(path, pg.pw_uid, pg.pw_gid)
            os.chmod(path, 0o644)


def postmaster_pids(workdir):
    pids = []
    for dirpath, dirnames, filenames in os.walk(workdir):
        if 'postmaster.pid' in filenames:
            try:
                with open(os.path.join(dirpath, 'postmaster.pid')) as f:
                    pids.append(int(f.readline().strip()))
            except (OSError, ValueError):
                pass
    return pids


def stop_leftovers(workdir, session_id):
    """Stop what the run left behind: its session's processes and postmasters under the scratch dir."""
    victims = set(postmaster_pids(workdir))
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session_id:
                    victims.add(int(entry))
            except OSError:
                pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in victims:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except OSError:
                pass
        if not alive:
            return
        time.sleep(3)


def run_feature(python, workdir, feature, agent, slow):
    env = dict(os.environ)
    env.update({'DCS': 'etcd3', 'PATH': '{}:{}:{}'.format(os.path.dirname(python), PG_BIN, env.get('PATH', '')),
                'HOME': workdir, 'PYTHONDONTWRITEBYTECODE': '1'})
    # The suite's own CI knob (environment.py: every "after N seconds" times 5 on CI machines).
    if slow:
        env['BUILD_NUMBER'] = '1'
    else:
        for k in ('TRAVIS_BUILD_NUMBER', 'BUILD_NUMBER', 'GITHUB_ACTIONS'):
            env.pop(k, None)
    # Not under features/output: the suite's before_all empties that directory.
    report = os.path.join(workdir, 'report-{}.json'.format(feature))
    log_path = os.path.join(workdir, 'behave-{}.log'.format(feature))
    # behave pairs each -f with the -o after it: the plain story to a log, JSON to the report.
    cmd = ['runuser', '-u', 'postgres', '--', python, '-m', 'behave', '--no-capture', '--no-logcapture',
           '-f', 'plain', '-o', log_path, '-f', 'json', '-o', report, 'features/{}.feature'.format(feature)]
    # What the suite prints besides the story (its coverage report, the controller's notes) goes
    # to a file of its own, so that this script's output is one line per scenario.
    out_path = os.path.join(workdir, 'behave-{}.out'.format(feature))
    started = time.time()
    with open(os.devnull, 'rb') as devnull, open(out_path, 'wb') as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=devnull, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        proc.wait()
    finally:
        stop_leftovers(workdir, proc.pid)
    elapsed = time.time() - started
    results = []
    try:
        with open(report) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = []
    for feat in data:
        for el in feat.get('elements', []):
            if el.get('type') != 'scenario':
                continue
            status = el.get('status', 'untested')
            failed_step = ''
            for step in el.get('steps', []):
                res = step.get('result', {})
                if res.get('status') == 'failed':
                    msg = res.get('error_message') or ''
                    if isinstance(msg, list):
                        msg = ' '.join(msg)
                    failed_step = '{} {}: {}'.format(step.get('keyword', ''), step.get('name', ''),
                                                     msg.strip().splitlines()[-1] if msg.strip() else '')
                    break
            results.append((el.get('name', '?'), status, failed_step))
    if not results:
        results.append(('(feature did not run; see {})'.format(log_path), 'failed', ''))
    return results, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('features', nargs='*', help='feature names (default: the ten issue 14 names)')
    ap.add_argument('--agent', choices=['rampart', 'patroni', 'both'], default='rampart')
    ap.add_argument('--bin', default=os.environ.get('RAMPART_BIN', os.path.join(ROOT, 'target', 'release',
                                                                              'rampart')),
                    help='the rampart binary (copied before the run; default target/release/rampart)')
    ap.add_argument('--workdir', default='/tmp/rampart-acceptance')
    ap.add_argument('--slow', action='store_true',
                    help="the suite's own CI setting: every timeout five times longer (for a loaded machine)")
    args = ap.parse_args()
    # Stopped with SIGTERM, unwind as on Ctrl-C, so that the running feature's session and
    # postmasters are stopped too (run_feature's finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if os.geteuid() != 0:
        sys.exit('acceptance: run as root (behave runs as the postgres user, PostgreSQL refuses root)')
    features_dir = os.environ.get('PATRONI_FEATURES', DEFAULT_FEATURES_DIR)
    if not os.path.isdir(features_dir):
        sys.exit('acceptance: Patroni\'s features directory not found at {} (set PATRONI_FEATURES)'
                 .format(features_dir))
    features = args.features or DEFAULT_FEATURES
    for name in features:
        if not os.path.exists(os.path.join(features_dir, name + '.feature')):
            sys.exit('acceptance: no feature named {!r} in {}'.format(name, features_dir))
    taken = [p for p in PORTS if port_taken(p)]
    if taken:
        sys.exit('acceptance: the suite needs these fixed ports, which are in use: {}'.format(taken))
    agents = ['patroni', 'rampart'] if args.agent == 'both' else [args.agent]
    python = ensure_venv()

    rampart_bin = None
    if 'rampart' in agents:
        if not os.access(args.bin, os.X_OK):
            sys.exit('acceptance: no rampart binary at {} (make release, or --bin)'.format(args.bin))
        os.makedirs(args.workdir, exist_ok=True)
        rampart_bin = os.path.join(args.workdir, 'rampart-under-test')
        shutil.copy2(args.bin, rampart_bin)
        os.chmod(rampart_bin, 0o755)

    table = {}
    times = {}
    for agent in agents:
        for feature in features:
            workdir = os.path.join(args.workdir, agent, feature)
            prepare(python, workdir, features_dir, agent, rampart_bin)
            say('{}: {} ...'.format(agent, feature))
            results, elapsed = run_feature(python, workdir, feature, agent, args.slow)
            times[(agent, feature)] = elapsed
            for scenario, status, why in results:
                table.setdefault((feature, scenario), {})[agent] = (status, why)
                print('  {:<7} {:<8} {}{}'.format(agent, status, scenario, ('\n           ' + why) if why else ''),
                      flush=True)

    print()
    print('Patroni {} acceptance suite (DCS=etcd3{}), one line per scenario:'.format(
        PATRONI_VERSION, ', --slow' if args.slow else ''))
    header = '{:<24} {:<60} '.format('feature', 'scenario') + ' '.join('{:<8}'.format(a) for a in agents)
    print(header)
    print('-' * len(header))
    ok = True
    for (feature, scenario), by_agent in table.items():
        cells = []
        for a in agents:
            status = by_agent.get(a, ('-', ''))[0]
            cells.append('{:<8}'.format(status))
            if status not in ('passed', 'skipped', '-'):
                ok = False
        print('{:<24} {:<60} {}'.format(feature, scenario[:60], ' '.join(cells)))
    print()
    for a in agents:
        passed = sum(1 for v in table.values() if v.get(a, ('',))[0] == 'passed')
        total = sum(1 for v in table.values() if a in v)
        feats_ok = sum(1 for f in features
                       if all(v.get(a, ('passed',))[0] in ('passed', 'skipped')
                              for (ff, _), v in table.items() if ff == f))
        secs = sum(t for (aa, _), t in times.items() if aa == a)
        print('{}: {}/{} scenarios passed, {}/{} features fully passed, {:.0f} s'.format(
            a, passed, total, feats_ok, len(features), secs))
    print('logs: {}/<agent>/<feature>/features/output/ and behave-<feature>.log (.out: everything else the suite printed)'.format(args.workdir))
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()

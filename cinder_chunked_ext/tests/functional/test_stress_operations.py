#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""Many backups and restores at once, on POSIX, S3 and Swift together.

``cinder-backup`` runs up to ``backup_max_operations`` (15) operations in
one monkey-patched process, each with a driver object of its own, all
sharing the process's threads and its ``max_bytes_in_flight``.  The
worker (``stress_worker.py``) does that in a subprocess patched as the
service is, against a POSIX repository, the test S3 server (SeaweedFS)
and the test Swift server at once: full backups, incrementals (a chain
of three, and a long changed run cut into piece-sized objects) and
chain restores onto new and existing volumes, 18 of them running at the
same time, then restores of what they wrote.  Every restore is compared
byte for byte; the run must end within ``TIMEOUT`` seconds (a hang is a
failure, not a stuck test run).
"""

import json
import os
import subprocess
import sys
import uuid

import fixtures
import testtools
from testtools import content

import cinder_chunked_ext
from cinder_chunked_ext.tests.functional import concurrent_eventlet_worker \
    as cycles
from cinder_chunked_ext.tests.functional import stress_worker as worker
from cinder_chunked_ext.tests import s3_server
from cinder_chunked_ext.tests import swift_server

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'stress_worker.py')
TIMEOUT = 240
RENDEZVOUS_SECONDS = 90
# Peak resident memory of the worker: the interpreter, eventlet, boto3
# and swiftclient take about 150 MiB; the data in flight is bounded by
# max_bytes_in_flight (8 MiB) whatever the number of operations.
MAX_RSS_MIB = 400


class _Options(object):
    """Collects what a server fixture's ``configure`` would set."""

    def __init__(self):
        self.options = {}

    def config(self, **options):
        self.options.update(options)


class StressTestCase(testtools.TestCase):
    """18 operations at once in one monkey-patched process, three stores."""

    def setUp(self):
        super().setUp()
        self.s3 = self.useFixture(s3_server.S3ServerFixture())
        self.swift = self.useFixture(swift_server.SwiftServerFixture())
        self.workdir = self.useFixture(fixtures.TempDir()).path

    def run_worker(self):
        s3_options = _Options()
        self.s3.configure(s3_options)
        swift_options = _Options()
        self.swift.configure(
            swift_options,
            backup_swift_container='stress-%s' % uuid.uuid4().hex[:12])
        repo = os.path.join(self.workdir, 'repo')
        volumes = os.path.join(self.workdir, 'volumes')
        os.mkdir(repo)
        os.mkdir(volumes)
        config = os.path.join(self.workdir, 'config.json')
        with open(config, 'w') as f:
            json.dump({'workdir': volumes, 'posix_repo': repo,
                       'rendezvous_seconds': RENDEZVOUS_SECONDS,
                       's3': s3_options.options,
                       'swift': swift_options.options}, f)
        root = os.path.dirname(os.path.dirname(
            os.path.abspath(cinder_chunked_ext.__file__)))
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p])
        # Patched as cinder-backup is by default: with eventlet.
        env.pop('OS_CINDER_DISABLE_EVENTLET_PATCHING', None)
        try:
            proc = subprocess.run([sys.executable, WORKER, config], env=env,
                                  capture_output=True, timeout=TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            self.fail('the operations did not end within %d s (a hang); '
                      'worker stderr: %s' % (
                          TIMEOUT, (e.stderr or b'').decode(
                              errors='replace')[-3000:]))
        self.assertEqual(0, proc.returncode,
                         proc.stderr.decode(errors='replace')[-3000:])
        report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        summary = {k: v for k, v in report.items() if k != 'checks'}
        self.addDetailUniqueName('stress report', content.text_content(
            json.dumps(summary, indent=1)))
        return report

    def test_many_operations_three_stores_one_process_all_restores_equal(
            self):
        report = self.run_worker()
        self.assertEqual([], report['errors'])
        self.assertTrue(report['eventlet_active'])
        try:
            import cinder.monkey_patch  # noqa: F401
        except ImportError:
            self.assertEqual('eventlet', report['patched_by'])
        else:
            self.assertEqual('cinder', report['patched_by'])
        # Every operation of the stress phase was inside its share of the
        # process budget while all the others were.
        operations = 6 * len(worker.STORES)
        self.assertEqual(operations, report['stress_operations'])
        self.assertEqual(operations, report['met'])
        self.assertGreaterEqual(report['most_running'], operations)
        self.assertGreater(report['ticks'], 0)
        self.assertLess(report['maxrss_mib'], MAX_RSS_MIB)

        checks = report['checks']
        restores = [c for c in checks if c['op'].startswith('restore')]
        self.assertEqual(6 * len(worker.STORES), len(restores))
        self.assertEqual([], [c for c in restores if not c['ok']])
        backups = {c['op']: c for c in checks if c['op'].startswith('backup')}
        self.assertEqual(6 * len(worker.STORES), len(backups))
        for n, store in enumerate(worker.STORES):
            versions = worker.volumes(n)
            for version in ('a0', 'b0', 'c0'):
                # Full backups: objects of at most a chunk, end to end.
                spans = backups['backup %s %s' % (store, version)]['spans']
                size = len(versions[version].data)
                self.assertEqual(size, sum(length for _o, length in spans))
                self.assertEqual([0] + [o + n for o, n in spans[:-1]],
                                 [o for o, _n in spans])
                self.assertLessEqual(max(n for _o, n in spans), worker.CHUNK)
            for old, new in (('a0', 'a1'), ('a1', 'a2'), ('b0', 'b1')):
                # Incrementals: the changed runs, in pieces, from the
                # buffers hashed (b1's run spans four chunks: 12 pieces).
                self.assertEqual(
                    [list(r) for r in cycles.changed_runs(
                        versions[old].data, versions[new].data,
                        worker.SHA, worker.CHUNK, worker.PIECE)],
                    backups['backup %s %s' % (store, new)]['spans'],
                    '%s %s' % (store, new))
            for check in backups.values():
                self.assertLessEqual(
                    set(check['compressions']),
                    {'none', worker.ALGORITHMS[check['op'].split()[1]]})

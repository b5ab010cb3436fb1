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

"""Our options next to Cinder's: same names, same defaults, no clash.

oslo.config refuses a second, different option object under a name
already registered (DuplicateOptError).  A ``cinder-backup`` process
loads Cinder's backup drivers and ours, in an order we do not control,
so every import order is tried, each in a fresh interpreter: that is the
only way to see what registers first.
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import ddt

from cinder_chunked_ext.tests.compat import base

# Cinder's option lists: (module, attribute) -> our module defining them.
UPSTREAM_LISTS = [
    ('cinder.backup.drivers.posix', 'posixbackup_service_opts',
     'cinder_chunked_ext.drivers.posix'),
    ('cinder.backup.drivers.nfs', 'nfsbackup_service_opts',
     'cinder_chunked_ext.drivers.nfs'),
    ('cinder.backup.drivers.s3', 's3backup_service_opts',
     'cinder_chunked_ext.drivers.s3'),
    ('cinder.backup.drivers.swift', 'swiftbackup_service_opts',
     'cinder_chunked_ext.drivers.swift'),
    ('cinder.backup.chunkeddriver', 'backup_opts',
     'cinder_chunked_ext.engine.driver'),
    ('cinder.backup.driver', 'backup_opts',
     'cinder_chunked_ext.engine.driver'),
]

OUR_DRIVERS = ['cinder_chunked_ext.drivers.posix',
               'cinder_chunked_ext.drivers.nfs',
               'cinder_chunked_ext.drivers.s3',
               'cinder_chunked_ext.drivers.swift']

UPSTREAM_DRIVERS = ['cinder.backup.drivers.posix',
                    'cinder.backup.drivers.nfs',
                    'cinder.backup.drivers.s3',
                    'cinder.backup.drivers.swift',
                    'cinder.backup.chunkeddriver']

# Run in a fresh interpreter: import the modules named on the command
# line in that order, then report every registered option of the
# [DEFAULT] group, its resolved value and whether the registered object
# is the one Cinder's module defines.  With --no-cinder, Cinder cannot be
# imported (the standalone case).
CHILD = textwrap.dedent('''
    import importlib
    import json
    import sys

    args = sys.argv[1:]
    if args[0] == '--no-cinder':
        sys.modules['cinder'] = None
        args = args[1:]
    upstream = json.loads(args[0])
    for name in args[1:]:
        importlib.import_module(name)

    from oslo_config import cfg
    conf = cfg.CONF
    conf([], project='cinder', default_config_files=[],
         default_config_dirs=[])

    def describe(opt):
        kind = getattr(opt, 'type', None)
        choices = getattr(kind, 'choices', None)
        return {'class': type(opt).__name__,
                'default': opt.default,
                'secret': bool(opt.secret),
                'min': getattr(kind, 'min', None),
                'max': getattr(kind, 'max', None),
                'choices': (sorted(repr(c) for c in choices)
                            if choices else None),
                'ignore_case': bool(getattr(kind, 'ignore_case', False))}

    report = {'values': {}, 'opts': {}, 'foreign': []}
    for name, info in conf._opts.items():
        value = conf[name]
        if not isinstance(value, (str, int, float, bool, type(None))):
            value = str(value)
        report['values'][name] = value
        report['opts'][name] = describe(info['opt'])
    for module_name, attr in upstream:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for opt in getattr(module, attr):
            if conf._opts[opt.dest]['opt'] is not opt:
                report['foreign'].append(opt.dest)
    print('REPORT ' + json.dumps(report, sort_keys=True))
''')


def _importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _top_dir():
    import cinder_chunked_ext
    return os.path.dirname(os.path.dirname(
        os.path.abspath(cinder_chunked_ext.__file__)))


@ddt.ddt
class OptionsTestCase(base.CompatTestCase):

    def setUp(self):
        super().setUp()
        self.ours = [m for m in OUR_DRIVERS if _importable(m)]
        self.upstream = []
        for name in UPSTREAM_DRIVERS:
            try:
                importlib.import_module(name)
            except ImportError:
                # A driver whose client library is missing (boto3, ...)
                # cannot be loaded by cinder-backup either.
                continue
            self.upstream.append(name)
        self.assertIn('cinder_chunked_ext.drivers.posix', self.ours)
        self.assertIn('cinder.backup.drivers.posix', self.upstream)

    def _upstream_lists(self, ours_only=True):
        """``[(module, attr, opts)]`` of Cinder lists we must match."""
        found = []
        for module_name, attr, our_module in UPSTREAM_LISTS:
            if ours_only and not _importable(our_module):
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            found.append((module_name, attr, getattr(module, attr)))
        return found

    def _run_child(self, modules, no_cinder=False):
        upstream = [[m, a] for m, a, _o in self._upstream_lists(False)]
        args = [sys.executable, '-c', CHILD]
        if no_cinder:
            args.append('--no-cinder')
        args.append(json.dumps(upstream))
        args.extend(modules)
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in [_top_dir(), env.get('PYTHONPATH')] if p)
        child = subprocess.run(args, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120,
                               check=False)
        stderr = child.stderr.decode('utf-8', 'replace')
        self.assertEqual(0, child.returncode,
                         'importing %s failed:\n%s' % (modules,
                                                       stderr[-4000:]))
        for line in child.stdout.decode('utf-8').splitlines():
            if line.startswith('REPORT '):
                return json.loads(line[len('REPORT '):])
        self.fail('no report from the child; stderr:\n%s' % stderr[-4000:])

    def _expected_value(self, opt, state_path):
        default = opt.default
        if isinstance(default, str):
            default = default.replace('$state_path', state_path)
        return default

    def _assert_upstream_defaults(self, report):
        values = report['values']
        for module_name, _attr, opts in self._upstream_lists(False):
            for opt in opts:
                self.assertIn(opt.dest, values, module_name)
                self.assertEqual(
                    self._expected_value(opt, values['state_path']),
                    values[opt.dest],
                    '%s (%s)' % (opt.dest, module_name))

    @ddt.data('upstream_first', 'ours_first')
    def test_import_order_no_duplicate_opt_upstream_defaults(self, order):
        if order == 'upstream_first':
            modules = self.upstream + self.ours
        else:
            modules = self.ours + self.upstream
        report = self._run_child(modules)
        # Cinder's own option objects are the ones registered.
        self.assertEqual([], report['foreign'])
        self._assert_upstream_defaults(report)
        self.assertEqual('/var/lib/cinder/backup',
                         report['values']['backup_posix_path'])

    def test_standalone_options_same_as_upstream(self):
        # Without Cinder our own definitions are registered: their names,
        # types and defaults must be Cinder's.
        report = self._run_child(self.ours, no_cinder=True)
        mine = report['opts']
        for module_name, _attr, opts in self._upstream_lists():
            for opt in opts:
                where = '%s (%s)' % (opt.dest, module_name)
                self.assertIn(opt.dest, mine, where)
                ours = mine[opt.dest]
                self.assertEqual(type(opt).__name__, ours['class'], where)
                self.assertEqual(opt.default, ours['default'], where)
                self.assertEqual(bool(opt.secret), ours['secret'], where)
                kind = opt.type
                self.assertEqual(getattr(kind, 'min', None), ours['min'],
                                 where)
                self.assertEqual(getattr(kind, 'max', None), ours['max'],
                                 where)
                choices = getattr(kind, 'choices', None)
                if choices:
                    self.assertEqual(sorted(repr(c) for c in choices),
                                     ours['choices'], where)
                    self.assertEqual(
                        bool(getattr(kind, 'ignore_case', False)),
                        ours['ignore_case'], where)
        self.assertEqual('/var/lib/cinder/backup',
                         report['values']['backup_posix_path'])

    def test_driver_options_same_names_and_defaults(self):
        from cinder.backup.drivers import posix as upstream_posix
        from cinder_chunked_ext.drivers import posix as ours_posix
        pairs = [(upstream_posix.PosixBackupDriver,
                  ours_posix.PosixBackupDriver)]
        for name, cls_name in (('nfs', 'NFSBackupDriver'),
                               ('s3', 'S3BackupDriver'),
                               ('swift', 'SwiftBackupDriver')):
            ours_name = 'cinder_chunked_ext.drivers.%s' % name
            if not _importable(ours_name):
                continue
            try:
                theirs = importlib.import_module(
                    'cinder.backup.drivers.%s' % name)
            except ImportError:
                continue
            ours = importlib.import_module(ours_name)
            self.assertTrue(hasattr(ours, cls_name),
                            '%s has no %s' % (ours_name, cls_name))
            pairs.append((getattr(theirs, cls_name), getattr(ours, cls_name)))
        for theirs, ours in pairs:
            actual = {o.dest: o.default for o in ours.get_driver_options()}
            for opt in theirs.get_driver_options():
                where = '%s of %s' % (opt.dest, ours.__module__)
                self.assertIn(opt.dest, actual, where)
                self.assertEqual(opt.default, actual[opt.dest], where)

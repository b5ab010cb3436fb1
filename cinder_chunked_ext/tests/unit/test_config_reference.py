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

"""The documentation's configuration reference follows the code.

Each page of ``doc/source/configuration/`` holds a ``show-options``
directive naming one ``oslo.config.opts`` namespace; ``sphinx-build``
runs ``oslo_config.sphinxext`` on it at build time.  These tests run the
same formatter on the same namespaces, so they show that a page lists
every option of its driver with the help the code has now, and that
changing an option's help changes the page.
"""

import os
import re
from unittest import mock

import ddt
from oslo_config import sphinxext
import stevedore
import testtools

from cinder_chunked_ext import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
CONFIG_DOCS = os.path.join(ROOT, 'doc', 'source', 'configuration')
DRIVERS = sorted(opts.KNOWN_DRIVERS)


def rendered(namespace):
    """The reStructuredText ``show-options`` makes of ``namespace``."""
    return '\n'.join(sphinxext._format_option_help([namespace], False))


def option_help(page, group, name):
    """The help text the page gives to ``group``/``name``."""
    lines = page.splitlines()
    start = lines.index('.. oslo.config:group:: %s' % group)
    start = lines.index('.. oslo.config:option:: %s' % name, start)
    body = []
    for line in lines[start + 1:]:
        if line.startswith('.. oslo.config:'):
            break
        body.append(line.strip())
    return ' '.join(' '.join(body).split())


def installed_namespaces():
    manager = stevedore.ExtensionManager('oslo.config.opts',
                                         invoke_on_load=False)
    return set(manager.names())


@ddt.ddt
class ConfigReferenceTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if 'cinder_chunked_ext.posix' not in installed_namespaces():
            self.skipTest('the package is not installed (no entry points)')

    @ddt.data(*DRIVERS)
    def test_driver_page_every_option_with_its_help(self, name):
        page = rendered('cinder_chunked_ext.%s' % name)
        groups = opts.list_driver_opts(name)
        self.assertTrue(groups[0][1])
        for group, options in groups:
            for opt in options:
                self.assertIn(' '.join(opt.help.split()),
                              option_help(page, group, opt.dest))

    @ddt.data(*DRIVERS)
    def test_driver_page_help_changed_page_changed(self, name):
        group, options = opts.list_driver_opts(name)[0]
        opt = options[0]
        before = rendered('cinder_chunked_ext.%s' % name)
        changed = 'A help sentence nobody wrote before, for %s.' % opt.dest
        with mock.patch.object(opt, 'help', changed):
            after = rendered('cinder_chunked_ext.%s' % name)
        old = ' '.join(opt.help.split())
        self.assertIn(old, option_help(before, group, opt.dest))
        self.assertIn(changed, option_help(after, group, opt.dest))
        self.assertNotIn(old, option_help(after, group, opt.dest))
        self.assertNotIn(changed, before)
        self.assertNotEqual(before, after)

    def test_common_page_engine_options_not_driver_ones(self):
        page = rendered('cinder_chunked_ext.common')
        shown = set(re.findall(r'^\.\. oslo\.config:option:: (\S+)$', page,
                               re.M))
        self.assertIn('backup_compression_algorithm', shown)
        self.assertIn('max_bytes_in_flight', shown)
        self.assertNotIn('backup_posix_path', shown)

    def test_pages_cover_every_option_of_list_opts(self):
        shown = set()
        for namespace in ['common'] + DRIVERS:
            for group, options in (opts.list_common_opts()
                                   if namespace == 'common'
                                   else opts.list_driver_opts(namespace)):
                shown.update((group, opt.dest) for opt in options)
        every = {(group, opt.dest) for group, options in opts.list_opts()
                 for opt in options}
        self.assertEqual(set(), every - shown)

    @ddt.data(*DRIVERS)
    def test_driver_page_exists_and_names_its_namespace(self, name):
        path = os.path.join(CONFIG_DOCS, '%s.rst' % name)
        with open(path) as f:
            text = f.read()
        self.assertIn('.. show-options::', text)
        self.assertIn('cinder_chunked_ext.%s' % name, text)
        self.assertIn('cinder_chunked_ext.%s' % name, installed_namespaces())
        with open(os.path.join(CONFIG_DOCS, 'index.rst')) as f:
            self.assertIn('\n   %s\n' % name, f.read())

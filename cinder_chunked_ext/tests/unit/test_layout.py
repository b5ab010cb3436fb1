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

"""The package's layout: import direction, docstrings, public paths.

The tree reads engine -> stores -> drivers, with the standalone tool
beside them.  These tests read every module's source (nothing is
imported to find the edges, so a lazy import inside a function counts
too) and fail when an edge points the wrong way, when a module other
than ``cinder_compat`` imports Cinder, or when a path that operators
and Cinder use stops loading.
"""

import ast
import configparser
import importlib
import os
import re
import subprocess
import sys

import ddt
import testtools

import cinder_chunked_ext

PACKAGE = os.path.dirname(os.path.abspath(cinder_chunked_ext.__file__))
ROOT = os.path.dirname(PACKAGE)

# Subpackage -> subpackages (and top-level modules) it must never import.
FORBIDDEN = {
    'engine': {'tool', 'drivers', 'opts'},
    'store': {'engine', 'tool', 'drivers', 'opts', 'cinder_compat'},
    'drivers': {'tool'},
}
ONLY_CINDER_IMPORTER = 'cinder_compat'


def package_modules():
    """``{dotted name: path}`` of every module outside the tests."""
    found = {}
    for folder, dirs, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, ROOT)
        if rel.split(os.sep)[1:2] == ['tests']:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(('.', '__'))]
        for name in files:
            if name.endswith('.py'):
                module = os.path.join(rel, name[:-3]).replace(os.sep, '.')
                if module.endswith('.__init__'):
                    module = module[:-len('.__init__')]
                found[module] = os.path.join(folder, name)
    return found


def imported_modules(path, module):
    """Absolute names of every module ``path`` imports, anywhere in it."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    package = module if path.endswith('__init__.py') else \
        module.rpartition('.')[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                parts = parts[:len(parts) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            names.add(base)
            names.update('%s.%s' % (base, alias.name)
                         for alias in node.names)
    return names


def layer_of(name):
    """``engine``, ``tool``, ... for a module of this package, else None."""
    parts = name.split('.')
    if parts[0] != 'cinder_chunked_ext' or len(parts) < 2:
        return None
    return parts[1]


MODULES = package_modules()


@ddt.ddt
class ImportDirectionTest(testtools.TestCase):

    def test_package_modules_found_in_every_layer(self):
        layers = {layer_of(name) for name in MODULES}
        self.assertTrue({'engine', 'store', 'drivers', 'tool',
                         'cinder_compat', 'opts'} <= layers, layers)

    @ddt.data(*sorted(FORBIDDEN))
    def test_layer_imports_nothing_above_it(self, layer):
        wrong = []
        for name, path in sorted(MODULES.items()):
            if layer_of(name) != layer:
                continue
            for target in imported_modules(path, name):
                if layer_of(target) in FORBIDDEN[layer]:
                    wrong.append('%s imports %s' % (name, target))
        self.assertEqual([], wrong)

    def test_cinder_imported_only_by_compat_module(self):
        importers = sorted(
            name for name, path in MODULES.items()
            if any(t == 'cinder' or t.startswith('cinder.')
                   for t in imported_modules(path, name)))
        self.assertEqual(['cinder_chunked_ext.' + ONLY_CINDER_IMPORTER],
                         importers)

    def test_imported_modules_relative_import_resolved(self):
        # The checker itself must see through relative imports, or a
        # "from ..tool import cli" in the engine would go unnoticed.
        path = os.path.join(self.useFixture(
            __import__('fixtures').TempDir()).path, 'mod.py')
        with open(path, 'w') as f:
            f.write('def f():\n    from ..tool import cli\n')
        self.assertIn('cinder_chunked_ext.tool.cli',
                      imported_modules(path, 'cinder_chunked_ext.engine.x'))

    def test_every_module_opens_with_docstring(self):
        missing = [name for name, path in sorted(MODULES.items())
                   if not ast.get_docstring(ast.parse(
                       open(path, encoding='utf-8').read()))]
        self.assertEqual([], missing)


def readme_driver_paths():
    with open(os.path.join(ROOT, 'README.rst'), encoding='utf-8') as f:
        return sorted(set(re.findall(r'backup_driver\s*=\s*([\w.]+)',
                                     f.read())))


def setup_cfg_entry_points():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, 'setup.cfg'))
    points = {}
    for group, text in parser['entry_points'].items():
        for line in text.strip().splitlines():
            name, _sep, target = line.partition('=')
            points[(group, name.strip())] = target.strip()
    return points


@ddt.ddt
class PublicPathTest(testtools.TestCase):

    def test_readme_names_driver_paths(self):
        self.assertGreaterEqual(len(readme_driver_paths()), 3)

    @ddt.data(*readme_driver_paths())
    def test_readme_backup_driver_path_loads_driver_class(self, path):
        module_name, _sep, class_name = path.rpartition('.')
        cls = getattr(importlib.import_module(module_name), class_name)
        self.assertTrue(hasattr(cls, 'backup') and hasattr(cls, 'restore'),
                        path)

    @ddt.data(*sorted(setup_cfg_entry_points().items()))
    @ddt.unpack
    def test_setup_cfg_entry_point_target_loads(self, key, target):
        module_name, _sep, attr = target.partition(':')
        obj = importlib.import_module(module_name)
        for part in attr.split('.') if attr else []:
            obj = getattr(obj, part)
        self.assertTrue(callable(obj), '%s = %s' % (key, target))

    def test_python_m_package_runs_tool(self):
        result = subprocess.run(
            [sys.executable, '-m', 'cinder_chunked_ext', '--help'],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('cinder-chunked-backup', result.stdout)


# Listed for a reason other than an import: pbr builds and versions the
# package.
LISTED_NOT_IMPORTED = {'pbr'}
# Imported under a guard, and an extra (or Cinder itself) brings them.
# castellan: only encrypted backups with keys in a key manager need it
# (the ``encryption`` extra; Cinder installs it anyway).
OPTIONAL_IMPORTS = {'cinder', 'os_brick', 'castellan'}


def requirement_names(filename):
    names = set()
    with open(os.path.join(ROOT, filename), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                names.add(re.split(r'[<>=!~;\[ ]', line, 1)[0].lower())
    return names


def third_party_imports():
    """Top-level names the package (not its tests) imports, stdlib left out."""
    found = set()
    for name, path in MODULES.items():
        for target in imported_modules(path, name):
            top = target.split('.')[0]
            if top and top not in sys.stdlib_module_names and \
                    top != 'cinder_chunked_ext':
                found.add(top)
    return found


def distribution_of(top_level):
    from importlib import metadata
    dists = metadata.packages_distributions().get(top_level, [])
    return {d.lower().replace('_', '-') for d in dists}


class DependencyTest(testtools.TestCase):

    def test_every_listed_requirement_imported(self):
        imported = set()
        for top in third_party_imports():
            imported |= distribution_of(top)
        listed = {n.replace('_', '-').replace('.', '-') for n in
                  requirement_names('requirements.txt')}
        unused = {n for n in listed - LISTED_NOT_IMPORTED
                  if n not in {d.replace('.', '-') for d in imported}}
        self.assertEqual(set(), unused)

    def test_every_import_listed_or_optional(self):
        listed = {n.replace('_', '-').replace('.', '-') for n in
                  requirement_names('requirements.txt')}
        unlisted = []
        for top in sorted(third_party_imports() - OPTIONAL_IMPORTS):
            dists = {d.replace('.', '-') for d in distribution_of(top)}
            if not dists & listed:
                unlisted.append('%s (%s)' % (top, ', '.join(sorted(dists))
                                             or 'not installed'))
        self.assertEqual([], unlisted)

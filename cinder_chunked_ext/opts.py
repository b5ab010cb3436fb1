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

"""Every option of the package, for ``oslo-config-generator``.

The drivers are walked through the package's own stevedore namespace in
sorted order, so the generated sample is stable.  Each driver class says
which of its options belong in ``[DEFAULT]`` (``get_driver_options``,
upstream's names and defaults) and which in ``[chunked_backup]``
(``get_extra_options``, the options this package adds).
"""

import itertools

import stevedore

from cinder_chunked_ext.engine import driver as chunked

DRIVER_NAMESPACE = 'cinder_chunked_ext.backup_drivers'
# Used when the package's entry points are not installed (a source tree).
KNOWN_DRIVERS = {
    'nfs': 'cinder_chunked_ext.drivers.nfs:NFSBackupDriver',
    'posix': 'cinder_chunked_ext.drivers.posix:PosixBackupDriver',
    's3': 'cinder_chunked_ext.drivers.s3:S3BackupDriver',
    'swift': 'cinder_chunked_ext.drivers.swift:SwiftBackupDriver',
}


def driver_classes():
    """``[(name, class), ...]`` of every registered driver, by name."""
    manager = stevedore.ExtensionManager(DRIVER_NAMESPACE,
                                         invoke_on_load=False,
                                         on_load_failure_callback=_fail)
    found = {ext.name: ext.plugin for ext in manager}
    if not found:
        found = {name: _import(path) for name, path in KNOWN_DRIVERS.items()}
    return sorted(found.items())


def _fail(manager, entrypoint, error):
    # A broken driver must not disappear silently from the sample.
    raise error


def _import(path):
    import importlib
    module_name, _sep, class_name = path.partition(':')
    return getattr(importlib.import_module(module_name), class_name)


def _unique(opts):
    seen = set()
    result = []
    for opt in opts:
        if opt.dest not in seen:
            seen.add(opt.dest)
            result.append(opt)
    return result


def list_opts():
    """``[(group, [opts])]`` for the config generator."""
    drivers = driver_classes()
    default = list(itertools.chain(chunked.backup_opts, chunked.driver_opts))
    extra = list(chunked.pipeline_opts)
    for _name, cls in drivers:
        default.extend(cls.get_driver_options())
        getter = getattr(cls, 'get_extra_options', None)
        if getter is not None:
            extra.extend(getter())
    return [('DEFAULT', _unique(default)),
            (chunked.PIPELINE_GROUP, _unique(extra))]


# -- one namespace per page of the configuration reference -------------------
# The documentation shows the engine's options once and each driver's own
# options on the driver's page; each lister below is an oslo.config.opts
# entry point (setup.cfg).  A new driver needs one line here and one there.

def list_common_opts():
    """The engine's options, shared by every driver."""
    return [('DEFAULT', _unique(itertools.chain(chunked.backup_opts,
                                                chunked.driver_opts))),
            (chunked.PIPELINE_GROUP, _unique(chunked.pipeline_opts))]


def list_driver_opts(name):
    """``[(group, [opts])]`` of the driver registered as ``name`` alone."""
    cls = dict(driver_classes())[name]
    groups = [('DEFAULT', _unique(cls.get_driver_options()))]
    getter = getattr(cls, 'get_extra_options', None)
    if getter is not None:
        groups.append((chunked.PIPELINE_GROUP, _unique(getter())))
    return groups


def _driver_lister(name):
    def list_one_driver_opts():
        return list_driver_opts(name)
    list_one_driver_opts.__doc__ = 'The options of the %s driver.' % name
    return list_one_driver_opts


list_posix_opts = _driver_lister('posix')
list_nfs_opts = _driver_lister('nfs')
list_s3_opts = _driver_lister('s3')
list_swift_opts = _driver_lister('swift')

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

"""Compatibility tests against Cinder itself.

Importing Cinder's test package fixes the concurrency mode of the whole
process, once: eventlet monkey-patching, or native threads when
``OS_CINDER_DISABLE_EVENTLET_PATCHING`` is true.  It has to happen here,
before any test module imports Cinder (which would select oslo.service's
eventlet backend without patching).

This process runs with native threads unless the variable says
otherwise: the test runner has already imported ``ssl``, and patching it
afterwards breaks every TLS client in the process (boto3 among them).
The eventlet mode, cinder-backup's default, runs in a child process that
patches before importing anything else (see ``test_manager_cycle``).
"""

import os

os.environ.setdefault('OS_CINDER_DISABLE_EVENTLET_PATCHING', '1')

try:
    from cinder.tests import unit as _cinder_unit  # noqa: F401
except ImportError:  # pragma: no cover - the tests skip (see base)
    pass
